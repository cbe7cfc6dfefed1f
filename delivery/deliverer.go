package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// StateReader reads the current state of jobs; delivery uses it to skip
// jobs cancelled while they waited. cmd wires the projections store.
type StateReader interface {
	JobStates(ctx context.Context, tenantID string, jobIDs []string) (map[string]sluicev1.JobState, error)
}

// SecretSource returns a tenant's signing secret.
type SecretSource interface {
	SigningSecret(tenantID string) (string, error)
}

// Config configures a Deliverer.
type Config struct {
	// EventsTopic receives the attempt events. Required.
	EventsTopic string
	// Secrets resolves tenants' signing secrets. Required.
	Secrets SecretSource
	// States, when set, lets delivery skip cancelled jobs.
	States StateReader
	// Guard decides which addresses may be dialled. Zero value: public
	// addresses only.
	Guard Guard
	// DefaultTimeout of an attempt when the job sets none. Default 15s.
	DefaultTimeout time.Duration
	// MaxTimeout caps a job's own timeout. Default 5m.
	MaxTimeout time.Duration
	// ExcerptBytes of the response body kept in the attempt event.
	// Default 4096.
	ExcerptBytes int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 15 * time.Second
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = 5 * time.Minute
	}
	if c.ExcerptBytes == 0 {
		c.ExcerptBytes = 4096
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.EventsTopic == "" {
		errs = append(errs, errors.New("delivery: Config.EventsTopic: required"))
	}
	if c.Secrets == nil {
		errs = append(errs, errors.New("delivery: Config.Secrets: required"))
	}
	return errors.Join(errs...)
}

// Deliverer turns ready HTTP jobs into attempts; its Handle method is an
// eventlog.Handler for the delivery role's runner.
type Deliverer struct {
	cfg    Config
	poster *Poster
	states *stateBatcher // nil without Config.States
}

// New returns a Deliverer.
func New(cfg Config) (*Deliverer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Deliverer{cfg: cfg, poster: NewPoster(cfg.Guard, cfg.ExcerptBytes, cfg.Now)}
	if cfg.States != nil {
		d.states = newStateBatcher(cfg.States, time.Millisecond, 512)
	}
	return d, nil
}

// Close stops the state lookups and releases the connection pool. Call it
// after the runner using Handle has stopped.
func (d *Deliverer) Close() {
	if d.states != nil {
		d.states.close()
	}
	d.poster.Close()
}

// Handle runs the job a job.enqueued record describes, if it has an HTTP
// target and is due, and returns its job.attempted event. Other records
// produce nothing.
func (d *Deliverer) Handle(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error) {
	if eventlog.RecordType(rec) != eventlog.TypeJobEnqueued {
		return nil, nil
	}
	ev, err := eventlog.DecodeEvent(rec)
	if err != nil {
		d.cfg.Logger.ErrorContext(ctx, "skip undecodable record", "offset", rec.Offset, "partition", rec.Partition, "error", err)
		return nil, nil
	}
	spec := ev.GetJobEnqueued().GetSpec()
	if spec.GetTarget().GetUrl() == "" {
		return nil, nil // a worker job, or an endpoint target handled elsewhere
	}
	if d.states != nil {
		state, err := d.states.state(ctx, ev.TenantId, ev.JobId)
		if err != nil {
			return nil, fmt.Errorf("read state of job %s: %w", ev.JobId, err)
		}
		if state == sluicev1.JobState_JOB_STATE_CANCELLED {
			return nil, nil
		}
	}
	secret, err := d.cfg.Secrets.SigningSecret(ev.TenantId)
	if err != nil {
		return nil, fmt.Errorf("signing secret of tenant %s: %w", ev.TenantId, err)
	}
	signer, err := NewSigner(secret)
	if err != nil {
		return nil, fmt.Errorf("signing secret of tenant %s: %w", ev.TenantId, err)
	}
	const attempt = 1
	started := d.cfg.Now()
	res := d.poster.Post(ctx, Request{
		URL:     spec.GetTarget().GetUrl(),
		ID:      ev.JobId,
		Body:    spec.Payload,
		Headers: spec.Headers,
		Signer:  signer,
		Timeout: d.timeout(spec),
	})
	if ctx.Err() != nil {
		return nil, ctx.Err() // stopping: the attempt is repeated by the next owner
	}
	out, err := eventlog.EncodeEvent(d.cfg.EventsTopic, eventlog.NewEvent(eventlog.Meta{
		TenantID:    ev.TenantId,
		JobID:       ev.JobId,
		EventID:     eventlog.DeriveID(rec, 0),
		CausationID: ev.EventId,
		Actor:       &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "delivery"},
		OccurredAt:  d.cfg.Now(),
	}, attemptEvent(attempt, started, res)))
	if err != nil {
		return nil, err
	}
	d.cfg.Logger.DebugContext(ctx, "delivered", "job_id", ev.JobId, "attempt", attempt,
		"status_code", res.StatusCode, "latency", res.Latency, "error", res.Err)
	return []*kgo.Record{out}, nil
}

func (d *Deliverer) timeout(spec *eventv1.JobSpec) time.Duration {
	if t := spec.GetTimeout(); t != nil && t.AsDuration() > 0 {
		return min(t.AsDuration(), d.cfg.MaxTimeout)
	}
	return d.cfg.DefaultTimeout
}

// attemptEvent describes one attempt and its consequence.
func attemptEvent(attempt int32, started time.Time, res Result) *eventv1.JobAttempted {
	ev := &eventv1.JobAttempted{
		Attempt:         attempt,
		StartedAt:       timestamppb.New(started),
		Latency:         durationpb.New(res.Latency),
		StatusCode:      int32(res.StatusCode),
		ResponseExcerpt: res.Excerpt,
		ResponseHeaders: res.ResponseHeaders,
	}
	switch {
	case res.OK():
		ev.Outcome = eventv1.Outcome_OUTCOME_SUCCEEDED
	case res.Err != nil:
		ev.Error = res.Err.Error()
		ev.Outcome = eventv1.Outcome_OUTCOME_DEAD
		ev.Reason = "attempt failed: " + ev.Error
	default:
		ev.Error = fmt.Sprintf("HTTP %d", res.StatusCode)
		ev.Outcome = eventv1.Outcome_OUTCOME_DEAD
		ev.Reason = "attempt failed: " + ev.Error
	}
	return ev
}
