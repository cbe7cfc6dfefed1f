package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// EnqueueOption sets an optional field of a job to enqueue.
type EnqueueOption func(*sluicev1.EnqueueRequest)

// WithPriority sets the job's priority class. Default PriorityNormal.
func WithPriority(p Priority) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) { r.Priority = p }
}

// WithRunAt delays the job's first attempt until t.
func WithRunAt(t time.Time) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) { r.RunAt = timestamppb.New(t) }
}

// WithIdempotencyKey makes the enqueue idempotent per tenant: a repeated
// key returns the first job with Created false.
func WithIdempotencyKey(key string) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) { r.IdempotencyKey = key }
}

// WithTargetURL has the server POST the job to url instead of waiting for
// a worker.
func WithTargetURL(url string) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) {
		r.Target = &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: url}}
	}
}

// WithEndpoint has the server deliver the job to an endpoint created with
// the EndpointService.
func WithEndpoint(endpointID string) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) {
		r.Target = &sluicev1.Target{Kind: &sluicev1.Target_EndpointId{EndpointId: endpointID}}
	}
}

// WithMaxAttempts sets the attempts before the job is dead-lettered.
// Default: the queue's, else the server's.
func WithMaxAttempts(n int) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) { r.MaxAttempts = int32(n) }
}

// WithTimeout sets the per-attempt timeout of HTTP delivery.
func WithTimeout(d time.Duration) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) { r.Timeout = durationpb.New(d) }
}

// WithHeaders adds HTTP headers to each delivery.
func WithHeaders(h map[string]string) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) {
		if r.Headers == nil {
			r.Headers = make(map[string]string, len(h))
		}
		for k, v := range h {
			r.Headers[k] = v
		}
	}
}

// WithRetrySchedule sets the delays between attempts; the last one
// repeats while attempts remain.
func WithRetrySchedule(delays ...time.Duration) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) {
		p := &sluicev1.RetryPolicy{}
		for _, d := range delays {
			p.Schedule = append(p.Schedule, d.String())
		}
		r.RetryPolicy = p
	}
}

// WithExponentialRetry sets exponential backoff between attempts:
// initial * multiplier^(n-1), capped at max.
func WithExponentialRetry(initial time.Duration, multiplier float64, max time.Duration) EnqueueOption {
	return func(r *sluicev1.EnqueueRequest) {
		r.RetryPolicy = &sluicev1.RetryPolicy{Exponential: &sluicev1.RetryPolicy_Exponential{
			Initial: initial.String(), Multiplier: multiplier, Max: max.String(),
		}}
	}
}

// NewEnqueueRequest builds the request for one job: payload is any
// JSON-marshalable value (json.RawMessage passes through as it is).
func NewEnqueueRequest(queue string, payload any, opts ...EnqueueOption) (*EnqueueRequest, error) {
	v, err := JSONValue(payload)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	r := &sluicev1.EnqueueRequest{Queue: queue, Payload: v}
	for _, opt := range opts {
		opt(r)
	}
	return r, nil
}

// Enqueued is the answer to an enqueue.
type Enqueued struct {
	Job *Job
	// False when an idempotency key matched an existing job; Job is then
	// that job.
	Created bool
}

// Enqueue appends a job to queue. It returns once the server's log has
// acknowledged the job, so a returned job is never lost.
func (c *Client) Enqueue(ctx context.Context, queue string, payload any, opts ...EnqueueOption) (Enqueued, error) {
	req, err := NewEnqueueRequest(queue, payload, opts...)
	if err != nil {
		return Enqueued{}, fmt.Errorf("enqueue: %w", err)
	}
	return c.EnqueueRequest(ctx, req)
}

// EnqueueRequest enqueues a prepared request.
func (c *Client) EnqueueRequest(ctx context.Context, req *EnqueueRequest) (Enqueued, error) {
	resp, err := c.jobs.Enqueue(ctx, connect.NewRequest(req))
	if err != nil {
		return Enqueued{}, wrap("enqueue", err)
	}
	return Enqueued{Job: resp.Msg.Job, Created: resp.Msg.Created}, nil
}

// MaxBatch is the most jobs one EnqueueBatch call takes.
const MaxBatch = 1000

// EnqueueBatch enqueues up to MaxBatch jobs in one transaction: all or
// nothing. A bad item fails the whole call with an error naming its
// index. Results are in request order.
func (c *Client) EnqueueBatch(ctx context.Context, reqs []*EnqueueRequest) ([]Enqueued, error) {
	if len(reqs) == 0 {
		return nil, errors.New("enqueue batch: no jobs")
	}
	resp, err := c.jobs.EnqueueBatch(ctx, connect.NewRequest(&sluicev1.EnqueueBatchRequest{Jobs: reqs}))
	if err != nil {
		return nil, wrap("enqueue batch", err)
	}
	out := make([]Enqueued, len(resp.Msg.Results))
	for i, r := range resp.Msg.Results {
		out[i] = Enqueued{Job: r.Job, Created: r.Created}
	}
	return out, nil
}
