package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/queuelimit"
	"github.com/sluicehq/sluice/retrytiers"
	"github.com/sluicehq/sluice/retrytiers/delayline"
)

// JobRun is where a job stands: its state, and the first attempt of its
// current attempt budget (0 until it is retried by hand).
type JobRun struct {
	State       sluicev1.JobState
	BudgetStart int32
	// EnqueueEventID is the job.enqueued that created the job; empty
	// until the read model folded it.
	EnqueueEventID string
	// CreatedAt is the job's creation time (Unix µs) as its winning
	// job.enqueued says; 0 when unknown.
	CreatedAt int64
	// Attempt is the job's latest finished attempt.
	Attempt int32
	// Purged is set when the job was purged: nothing of it runs again.
	Purged bool
}

// StateReader reads where jobs stand; delivery uses it to skip jobs
// cancelled while they waited, and runs that a retry by hand replaced.
// cmd wires the projections store.
type StateReader interface {
	JobRuns(ctx context.Context, tenantID string, jobIDs []string) (map[string]JobRun, error)
}

// SecretSource returns a tenant's signing secret.
type SecretSource interface {
	SigningSecret(tenantID string) (string, error)
}

// Observer hears about every attempt; cmd turns it into metrics. Its
// methods must not block.
type Observer interface {
	// Attempted reports a finished attempt and what follows it. endpoint
	// names where it went: the endpoint id for an endpoint target, else
	// the host (host:port) of the target URL.
	Attempted(queue, endpoint string, outcome eventv1.Outcome, statusCode int, latency time.Duration)
	// Deferred reports an attempt put back because its target's share of
	// slots was full.
	Deferred(queue string)
}

type nopObserver struct{}

func (nopObserver) Attempted(string, string, eventv1.Outcome, int, time.Duration) {}
func (nopObserver) Deferred(string)                                               {}

// Config configures a Deliverer.
type Config struct {
	// Topics names the events, delay-line and dead-letter topics.
	Topics eventlog.Topics
	// Secrets resolves tenants' signing secrets. Required.
	Secrets SecretSource
	// States, when set, lets delivery skip cancelled jobs.
	States StateReader
	// Queues, when set, gives queues' pause and limits (queues.go).
	Queues QueueControl
	// Guard decides which addresses may be dialled. Zero value: public
	// addresses only.
	Guard Guard
	// DefaultTimeout of an attempt when the job sets none. Default 15s.
	DefaultTimeout time.Duration
	// MaxTimeout caps a job's own timeout. Default 5m.
	MaxTimeout time.Duration
	// MaxPerHost is the attempts in flight to one host:port from one
	// partition; an attempt beyond it waits up to SlotWait for a slot, and
	// is then deferred by DeferFor without counting as an attempt. Set it below the runner's per-partition
	// concurrency: a slow or hanging target then holds at most this many
	// of a partition's slots and healthy targets' jobs keep the rest.
	// Default 224.
	MaxPerHost int
	// SlotWait is how long an attempt waits for its target's slot before
	// it is deferred. Default 100ms.
	SlotWait time.Duration
	// DeferFor is how long an attempt deferred by MaxPerHost waits.
	// Default 1s.
	DeferFor time.Duration
	// ExcerptBytes of the response body kept in the attempt event.
	// Default 4096.
	ExcerptBytes int
	// Endpoints resolves endpoint targets at attempt time. Without it, a
	// job with an endpoint target dies ("unknown endpoint").
	Endpoints EndpointSource
	// Protection guards each endpoint: breaker, limits, auto-disable.
	// Zero fields take their defaults.
	Protection ProtectionConfig
	// Observer hears about attempts. Default: none.
	Observer Observer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 15 * time.Second
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = 5 * time.Minute
	}
	if c.MaxPerHost == 0 {
		c.MaxPerHost = 224
	}
	if c.SlotWait == 0 {
		c.SlotWait = 100 * time.Millisecond
	}
	if c.DeferFor == 0 {
		c.DeferFor = time.Second
	}
	if c.ExcerptBytes == 0 {
		c.ExcerptBytes = 4096
	}
	c.Protection = c.Protection.WithDefaults()
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
	if c.Topics.Prefix == "" {
		errs = append(errs, errors.New("delivery: Config.Topics: required"))
	}
	if c.Secrets == nil {
		errs = append(errs, errors.New("delivery: Config.Secrets: required"))
	}
	return errors.Join(errs...)
}

// Deliverer turns ready HTTP jobs into attempts; its Handle method is an
// eventlog.Handler for the delivery role's runner.
type Deliverer struct {
	cfg     Config
	poster  *Poster
	hosts   *hostLimiter
	protect *protector
	states  *stateBatcher // nil without Config.States
	queues  queuelimit.Limits
}

// New returns a Deliverer.
func New(cfg Config) (*Deliverer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Deliverer{cfg: cfg, poster: NewPoster(cfg.Guard, cfg.ExcerptBytes, cfg.Now), hosts: newHostLimiter(cfg.MaxPerHost, cfg.SlotWait),
		protect: newProtector(cfg.Protection)}
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

// Handle runs the attempt a job.enqueued or job.ready record asks for, if
// the job has an HTTP target, and returns the attempt's job.attempted
// event with what follows it: a timer for the next attempt or a dead
// letter. Other records produce nothing.
func (d *Deliverer) Handle(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error) {
	typ := eventlog.RecordType(rec)
	if typ != eventlog.TypeJobEnqueued && typ != eventlog.TypeJobReady {
		return nil, nil
	}
	ev, err := eventlog.DecodeEvent(rec)
	if err != nil {
		d.cfg.Logger.ErrorContext(ctx, "skip undecodable record", "offset", rec.Offset, "partition", rec.Partition, "error", err)
		return nil, nil
	}
	run, ok := d.runFor(ev)
	if !ok {
		return nil, nil
	}
	var cur JobRun
	if d.states != nil {
		var err error
		if cur, err = d.states.state(ctx, ev.TenantId, ev.JobId); err != nil {
			return nil, fmt.Errorf("read state of job %s: %w", ev.JobId, err)
		}
		if run.stale(cur) {
			return nil, nil
		}
	}
	out, held, release, err := d.gate(ctx, rec, ev, run, cur)
	if err != nil || held {
		return out, err
	}
	defer release()
	if id := run.spec.GetTarget().GetEndpointId(); id != "" {
		return d.handleEndpoint(ctx, rec, ev, run, id)
	}
	host := fmt.Sprintf("%s/%d", hostOf(run.spec.GetTarget().GetUrl()), rec.Partition)
	slot := d.hosts.acquire(host)
	if slot == nil {
		d.cfg.Observer.Deferred(run.spec.Queue)
		return d.deferRun(rec, ev, run)
	}
	started := d.cfg.Now()
	defer func() { d.hosts.release(host, slot, d.cfg.Now().Sub(started)) }()
	secret, err := d.cfg.Secrets.SigningSecret(ev.TenantId)
	if err != nil {
		return nil, fmt.Errorf("signing secret of tenant %s: %w", ev.TenantId, err)
	}
	signer, err := NewSigner(secret)
	if err != nil {
		return nil, fmt.Errorf("signing secret of tenant %s: %w", ev.TenantId, err)
	}
	res := d.poster.Post(ctx, Request{
		URL:         run.spec.GetTarget().GetUrl(),
		ID:          ev.JobId,
		ContentType: run.spec.GetContentType(),
		Body:        run.spec.Payload,
		Headers:     []map[string]string{run.spec.Headers},
		Signers:     []*Signer{signer},
		Timeout:     d.timeout(run.spec),
	})
	if ctx.Err() != nil {
		return nil, ctx.Err() // stopping: the attempt is repeated by the next owner
	}
	d.cfg.Logger.DebugContext(ctx, "delivered", "job_id", ev.JobId, "attempt", run.attempt,
		"status_code", res.StatusCode, "latency", res.Latency, "error", res.Err)
	return d.outcome(rec, ev, run, started, res)
}

// run is one attempt to make.
type run struct {
	attempt int32
	// budget is the first attempt of the job's current attempt budget
	// (JobReady.budget_start); 0 means 1.
	budget  int32
	spec    *eventv1.JobSpec
	history []*eventv1.JobAttempted
	// endpoint is set for an attempt made to an endpoint target.
	endpoint *endpointRun
}

// stale reports whether r no longer stands: its job was cancelled after
// r's budget began, or a retry by hand started a later budget.
func (r run) stale(cur JobRun) bool {
	// A purged job, or a copy of an attempt that already finished (two
	// job.ready for one attempt), runs no more.
	if cur.Purged || r.attempt <= cur.Attempt {
		return true
	}
	if r.budget < cur.BudgetStart {
		return true
	}
	return cur.State == sluicev1.JobState_JOB_STATE_CANCELLED && r.budget == cur.BudgetStart
}

// budgetAttempt is r's attempt counted within its budget (1-based).
func (r run) budgetAttempt() int { return int(r.attempt - max(r.budget, 1) + 1) }

// runFor reads the attempt an event asks for. A job.enqueued with a runAt
// still to come is left to its timer.
func (d *Deliverer) runFor(ev *eventv1.Event) (run, bool) {
	var r run
	switch b := ev.Body.(type) {
	case *eventv1.Event_JobEnqueued:
		r = run{attempt: 1, spec: b.JobEnqueued.GetSpec()}
		if at := r.spec.GetRunAt(); at != nil && at.AsTime().After(ev.OccurredAt.AsTime()) {
			return run{}, false
		}
	case *eventv1.Event_JobReady:
		r = run{attempt: b.JobReady.Attempt, budget: b.JobReady.BudgetStart, spec: b.JobReady.GetSpec(), history: b.JobReady.History}
	default:
		return run{}, false
	}
	// Jobs without a target wait for a worker.
	return r, r.spec.GetTarget().GetUrl() != "" || r.spec.GetTarget().GetEndpointId() != ""
}

// outcome builds the records that end an attempt, in the order they are
// written: the attempt event, then the timer of the next attempt or the
// dead letter.
func (d *Deliverer) outcome(rec *kgo.Record, ev *eventv1.Event, r run, started time.Time, res Result) ([]*kgo.Record, error) {
	now := d.cfg.Now()
	attempt := attemptEvent(r.attempt, started, res)
	meta := func(n int) eventlog.Meta {
		return eventlog.Meta{
			TenantID: ev.TenantId, JobID: ev.JobId, EventID: eventlog.DeriveID(rec, n),
			CausationID: ev.EventId, OccurredAt: now,
			Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "delivery"},
		}
	}
	var follow *kgo.Record
	if !res.OK() {
		failure := failureOf(res)
		if r.endpoint != nil && r.endpoint.parkNext {
			failure = retrytiers.Failure{} // the endpoint is disabled: its message waits, it does not die
		}
		decision := retrytiers.ForJob(r.spec).Decide(r.budgetAttempt(), failure, now, rand.Float64)
		if errors.Is(res.Err, ErrForbiddenAddress) || errors.Is(res.Err, ErrUnknownEndpoint) {
			decision = retrytiers.Decision{Dead: true, Reason: "permanent failure: " + res.Err.Error()}
		}
		var err error
		if decision.Dead {
			attempt.Outcome, attempt.Reason = eventv1.Outcome_OUTCOME_DEAD, decision.Reason
			follow, err = d.deadLetter(ev, r, attempt, now)
		} else {
			due := now.Add(decision.Wait)
			attempt.Outcome, attempt.NextAttemptAt = eventv1.Outcome_OUTCOME_RETRY, timestamppb.New(due)
			next := eventlog.NewEvent(meta(1), &eventv1.JobReady{
				Attempt: r.attempt + 1, BudgetStart: r.budget, Spec: r.spec, History: append(slices.Clip(r.history), attempt),
			})
			if r.endpoint != nil && r.endpoint.parkNext {
				attempt.NextAttemptAt = nil // when the endpoint is enabled again
				follow, err = d.parkedRecord(next, r.endpoint.id)
			} else {
				follow, err = delayline.Schedule(d.cfg.Topics, next, due, now)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	out, err := eventlog.EncodeEvent(d.cfg.Topics.Events(), eventlog.NewEvent(meta(0), attempt))
	if err != nil {
		return nil, err
	}
	d.cfg.Observer.Attempted(r.spec.Queue, r.endpointLabel(), attempt.Outcome, res.StatusCode, res.Latency)
	outs := []*kgo.Record{out}
	if follow != nil {
		outs = append(outs, follow)
	}
	if r.endpoint != nil {
		outs = append(outs, r.endpoint.extra...)
	}
	return outs, nil
}

// deferRun puts an attempt whose host is saturated back on the shortest
// delay line, unchanged: no attempt is counted.
func (d *Deliverer) deferRun(rec *kgo.Record, ev *eventv1.Event, r run) ([]*kgo.Record, error) {
	return d.deferRunUntil(rec, ev, r, d.cfg.Now().Add(d.cfg.DeferFor))
}

// deferRunUntil puts an attempt back on the delay lines until due,
// unchanged: no attempt is counted.
func (d *Deliverer) deferRunUntil(rec *kgo.Record, ev *eventv1.Event, r run, due time.Time) ([]*kgo.Record, error) {
	now := d.cfg.Now()
	ready := eventlog.NewEvent(eventlog.Meta{
		TenantID: ev.TenantId, JobID: ev.JobId, EventID: eventlog.DeriveID(rec, 0),
		CausationID: ev.EventId, OccurredAt: now,
		Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "delivery"},
	}, &eventv1.JobReady{Attempt: r.attempt, BudgetStart: r.budget, Spec: r.spec, History: r.history})
	out, err := delayline.Schedule(d.cfg.Topics, ready, due, now)
	if err != nil {
		return nil, err
	}
	return []*kgo.Record{out}, nil
}

// hostOf is the host:port a URL connects to.
func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Host
}

// deadLetter is the sluice.dlq record of a job that ends here.
func (d *Deliverer) deadLetter(ev *eventv1.Event, r run, last *eventv1.JobAttempted, now time.Time) (*kgo.Record, error) {
	dl := &eventv1.DeadLetter{
		TenantId: ev.TenantId, JobId: ev.JobId, Spec: r.spec,
		Attempts: append(slices.Clip(r.history), last),
		Reason:   last.Reason, DiedAt: timestamppb.New(now),
	}
	value, err := proto.Marshal(dl)
	if err != nil {
		return nil, fmt.Errorf("encode dead letter of job %s: %w", ev.JobId, err)
	}
	return &kgo.Record{Topic: d.cfg.Topics.DLQ(), Key: []byte(ev.JobId), Value: value}, nil
}

// failureOf classifies a failed attempt for the retry policy.
func failureOf(res Result) retrytiers.Failure {
	return retrytiers.Failure{
		StatusCode: res.StatusCode,
		Timeout:    errors.Is(res.Err, context.DeadlineExceeded),
		RetryAfter: res.ResponseHeaders["Retry-After"],
	}
}

func (d *Deliverer) timeout(spec *eventv1.JobSpec) time.Duration {
	if t := spec.GetTimeout(); t != nil && t.AsDuration() > 0 {
		return min(t.AsDuration(), d.cfg.MaxTimeout)
	}
	return d.cfg.DefaultTimeout
}

// attemptEvent describes one attempt; for a failure the caller sets the
// outcome.
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
	default:
		ev.Error = fmt.Sprintf("HTTP %d", res.StatusCode)
	}
	return ev
}
