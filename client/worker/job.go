package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/client"
)

// Job is a job leased to this worker, as a handler sees it.
type Job struct {
	ID      string
	Queue   string
	Attempt int
	// MaxAttempts is the attempts the job has before it is dead-lettered.
	MaxAttempts int
	// Payload is the job's payload as JSON.
	Payload json.RawMessage
	Headers map[string]string
	// LeaseExpiresAt is when the lease ended as claimed; heartbeats
	// extend it while the handler runs.
	LeaseExpiresAt time.Time
	// State is the job as the server handed it out.
	State *client.Job

	leaseToken string
}

// Decode unmarshals the payload into v with encoding/json.
func (j *Job) Decode(v any) error {
	if err := json.Unmarshal(j.Payload, v); err != nil {
		return fmt.Errorf("decode payload of job %s: %w", j.ID, err)
	}
	return nil
}

func newJob(cj *client.ClaimedJob) (*Job, error) {
	payload, err := client.ValueJSON(cj.GetJob().GetPayload())
	if err != nil {
		return nil, err
	}
	j := cj.GetJob()
	return &Job{
		ID: j.GetId(), Queue: j.GetQueue(), Attempt: int(j.GetAttempt()), MaxAttempts: int(j.GetMaxAttempts()),
		Payload: payload, Headers: j.GetHeaders(), LeaseExpiresAt: cj.GetLeaseExpiresAt().AsTime(),
		State: j, leaseToken: cj.GetLeaseToken(),
	}, nil
}

// Handler runs jobs. Work returns the job's result (any JSON-marshalable
// value, or nil) or an error, which fails the attempt: the job is retried
// per its policy, unless the error is Permanent. A panic fails the attempt
// like an error. ctx is cancelled when the lease is lost (ErrLeaseLost is
// its cause) or a drain ran past Config.DrainTimeout.
type Handler interface {
	Work(ctx context.Context, job *Job) (result any, err error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job *Job) (any, error)

// Work calls f.
func (f HandlerFunc) Work(ctx context.Context, job *Job) (any, error) { return f(ctx, job) }

// PermanentError is a handler error that must not be retried: the job is
// dead-lettered at once.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, is Permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// ErrLeaseLost is the cause of a handler's cancelled context when its
// lease ended: a heartbeat was refused (the lease expired and the job went
// to another attempt) or could not reach the server before the lease
// expired. The outcome of such a run is dropped.
var ErrLeaseLost = errors.New("worker: lease lost")
