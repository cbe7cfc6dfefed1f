package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// ClaimedJob is a job leased to a worker, with the lease token that
// Heartbeat, Complete and Fail need.
type ClaimedJob = sluicev1.ClaimedJob

// ClaimOptions shape a claim.
type ClaimOptions struct {
	// WorkerID names the worker in the job's history. Required.
	WorkerID string
	// Max is the most jobs to lease: 1-1,000; 0 means 1.
	Max int
	// LeaseDuration is how long a lease lasts: 1s-1h; 0 means the
	// server's default (30s).
	LeaseDuration time.Duration
	// Wait holds the call open up to this long (at most 30s) when no job
	// is ready; 0 answers at once.
	Wait time.Duration
}

// Claim leases up to o.Max ready jobs of queue, highest priority first,
// then oldest first. It returns no jobs (and no error) when none was
// ready within o.Wait.
func (c *Client) Claim(ctx context.Context, queue string, o ClaimOptions) ([]*ClaimedJob, error) {
	req := &sluicev1.ClaimRequest{Queue: queue, WorkerId: o.WorkerID, Max: int32(o.Max)}
	if o.LeaseDuration > 0 {
		req.LeaseDuration = durationpb.New(o.LeaseDuration)
	}
	if o.Wait > 0 {
		req.Wait = durationpb.New(o.Wait)
	}
	resp, err := c.workers.Claim(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, wrap("claim", err)
	}
	return resp.Msg.Jobs, nil
}

// ClaimStream is an open server-streaming claim: the server leases jobs
// as they become ready, keeping at most MaxInFlight of the stream's
// leases outstanding.
type ClaimStream struct {
	s *connect.ServerStreamForClient[sluicev1.ClaimStreamResponse]
}

// StreamOptions shape a streaming claim.
type StreamOptions struct {
	// WorkerID names the worker in the job's history. Required.
	WorkerID string
	// MaxInFlight is the most leases of this stream outstanding at once:
	// 1-1,000; 0 means 1.
	MaxInFlight int
	// LeaseDuration is how long each lease lasts; 0 means the server's
	// default (30s).
	LeaseDuration time.Duration
}

// OpenClaimStream opens a streaming claim on queue. Cancel ctx or call
// Close to end it; leases already handed out stay valid.
func (c *Client) OpenClaimStream(ctx context.Context, queue string, o StreamOptions) (*ClaimStream, error) {
	req := &sluicev1.ClaimStreamRequest{Queue: queue, WorkerId: o.WorkerID, MaxInFlight: int32(o.MaxInFlight)}
	if o.LeaseDuration > 0 {
		req.LeaseDuration = durationpb.New(o.LeaseDuration)
	}
	s, err := c.workers.ClaimStream(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, wrap("claim stream", err)
	}
	return &ClaimStream{s: s}, nil
}

// Next waits for the next jobs. When the stream ends it returns the
// server's error, or ErrStreamClosed when the server ended it cleanly.
func (s *ClaimStream) Next() ([]*ClaimedJob, error) {
	if s.s.Receive() {
		return s.s.Msg().Jobs, nil
	}
	if err := s.s.Err(); err != nil {
		return nil, wrap("claim stream", err)
	}
	return nil, ErrStreamClosed
}

// Close ends the stream.
func (s *ClaimStream) Close() error { return s.s.Close() }

// ErrStreamClosed is returned by ClaimStream.Next when the server ended
// the stream without an error.
var ErrStreamClosed = errors.New("claim stream: closed by the server")

// Heartbeat extends a lease by extendBy from now (0: the lease's original
// duration) and returns its new expiry. IsStaleLease(err) when the lease
// is no longer the caller's.
func (c *Client) Heartbeat(ctx context.Context, jobID, leaseToken string, extendBy time.Duration) (time.Time, error) {
	req := &sluicev1.HeartbeatRequest{JobId: jobID, LeaseToken: leaseToken}
	if extendBy > 0 {
		req.ExtendBy = durationpb.New(extendBy)
	}
	resp, err := c.workers.Heartbeat(ctx, connect.NewRequest(req))
	if err != nil {
		return time.Time{}, wrap("heartbeat", err)
	}
	return resp.Msg.LeaseExpiresAt.AsTime(), nil
}

// Complete ends a leased job successfully; result (any JSON-marshalable
// value, or nil for none) is kept with the job.
func (c *Client) Complete(ctx context.Context, jobID, leaseToken string, result any) (*Job, error) {
	item, err := completeRequest(Completion{JobID: jobID, LeaseToken: leaseToken, Result: result})
	if err != nil {
		return nil, fmt.Errorf("complete: %w", err)
	}
	resp, err := c.workers.Complete(ctx, connect.NewRequest(item))
	if err != nil {
		return nil, wrap("complete", err)
	}
	return resp.Msg.Job, nil
}

// Completion is one item of CompleteBatch.
type Completion struct {
	JobID      string
	LeaseToken string
	// Result is any JSON-marshalable value; nil keeps none.
	Result any
}

// MaxCompleteBatch is the most items one CompleteBatch call takes.
const MaxCompleteBatch = 1000

// CompleteBatch completes up to MaxCompleteBatch leased jobs in one call.
// Each item succeeds or fails on its own: the returned slice holds, in
// order, nil or the item's error (with its Connect code, so
// IsStaleLease works on it). The error is the call's own.
func (c *Client) CompleteBatch(ctx context.Context, items []Completion) ([]error, error) {
	req := &sluicev1.CompleteBatchRequest{Items: make([]*sluicev1.CompleteRequest, len(items))}
	for i, it := range items {
		r, err := completeRequest(it)
		if err != nil {
			return nil, fmt.Errorf("complete batch: items[%d]: %w", i, err)
		}
		req.Items[i] = r
	}
	resp, err := c.workers.CompleteBatch(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, wrap("complete batch", err)
	}
	if len(resp.Msg.Results) != len(items) {
		return nil, fmt.Errorf("complete batch: %d results for %d items", len(resp.Msg.Results), len(items))
	}
	errs := make([]error, len(items))
	for i, r := range resp.Msg.Results {
		if r.Error != "" {
			errs[i] = fmt.Errorf("complete %s: %w", r.JobId, itemError(r.Error))
		}
	}
	return errs, nil
}

func completeRequest(c Completion) (*sluicev1.CompleteRequest, error) {
	r := &sluicev1.CompleteRequest{JobId: c.JobID, LeaseToken: c.LeaseToken}
	if c.Result != nil {
		v, err := JSONValue(c.Result)
		if err != nil {
			return nil, fmt.Errorf("result: %w", err)
		}
		r.Result = v
	}
	return r, nil
}

// itemError turns "failed_precondition: lease token is stale" into a
// *connect.Error with that code.
func itemError(s string) *connect.Error {
	name, msg, ok := strings.Cut(s, ": ")
	var code connect.Code
	if !ok || code.UnmarshalText([]byte(name)) != nil {
		return connect.NewError(connect.CodeUnknown, errors.New(s))
	}
	return connect.NewError(code, errors.New(msg))
}

// Fail ends a leased attempt with an error message. The job is retried per
// its policy unless retryable is false or its attempts ran out; the
// returned job is RETRYING or DEAD.
func (c *Client) Fail(ctx context.Context, jobID, leaseToken, message string, retryable bool) (*Job, error) {
	resp, err := c.workers.Fail(ctx, connect.NewRequest(&sluicev1.FailRequest{
		JobId: jobID, LeaseToken: leaseToken, Error: message, Retryable: &retryable,
	}))
	if err != nil {
		return nil, wrap("fail", err)
	}
	return resp.Msg.Job, nil
}
