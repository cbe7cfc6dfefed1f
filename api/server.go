package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/queuelimit"
)

// Config configures the API server.
type Config struct {
	// Auth resolves API keys. Required.
	Auth Authenticator
	// Log appends events. Required.
	Log Appender
	// Jobs reads job state. Required.
	Jobs JobStore
	// DeadLetters reads dead letters and the jobs to retry or purge.
	// Required.
	DeadLetters DeadLetterStore
	// Topics names where events and timers go. Required.
	Topics eventlog.Topics
	// Limits on requests; zero fields take their defaults.
	Limits Limits
	// Endpoints stores outbound endpoints. Default: none, and the
	// EndpointService is not served.
	Endpoints EndpointStore
	// Sources enables the SourceService (inbound webhook sources). Default:
	// none, and the SourceService is not served.
	Sources SourceConfig
	// Queues keeps queue settings. Default: none; every queue has the
	// zero settings.
	Queues QueueDirectory
	// QueueStats reads queues' jobs. Default: none, and the QueueService
	// is not served.
	QueueStats QueueStore
	// Workers keeps leases of jobs claimed by external workers. Default:
	// none, and the WorkerService is not served.
	Workers WorkerStore
	// Audit enables the AuditService and ReplayService; see AuditConfig.
	Audit AuditConfig
	// IdempotencyWindow is how long an idempotency key names its first
	// job. Default DefaultIdempotencyWindow (7 days).
	IdempotencyWindow time.Duration
	// ClaimPoll is the longest pause between looks for ready jobs while a
	// claim waits. Default 50ms.
	ClaimPoll time.Duration
	// Ready reports whether the node can serve (Kafka reachable, roles
	// started); /readyz answers 503 with its error. Default: always ready.
	Ready func(ctx context.Context) error
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	c.Limits = c.Limits.WithDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Queues == nil {
		c.Queues = noQueues{}
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if c.ClaimPoll == 0 {
		c.ClaimPoll = 50 * time.Millisecond
	}
	return c
}

// NewLeaseReaper returns the reaper of expired leases (and the sweep that
// resumes jobs parked by a paused queue) over cfg; tenants lists the
// tenants to sweep. Start it on nodes that serve the API.
func NewLeaseReaper(cfg Config, tenants func() []string) (*LeaseReaper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers == nil {
		return nil, errors.New("api: NewLeaseReaper: Config.Workers: required")
	}
	cfg = cfg.withDefaults()
	r := &LeaseReaper{workers: newWorkerService(cfg), logger: cfg.Logger}
	if cfg.QueueStats != nil {
		u := newUnparker(cfg)
		r.sweep = func(ctx context.Context) { u.sweep(ctx, tenants(), cfg.Logger) }
	}
	return r, nil
}

func newWorkerService(cfg Config) *WorkerService {
	return &WorkerService{
		store: cfg.Workers, queues: cfg.Queues, rates: new(queuelimit.Limits), log: cfg.Log,
		topics: cfg.Topics, now: cfg.Now, logger: cfg.Logger, poll: cfg.ClaimPoll,
	}
}

func newUnparker(cfg Config) *unparker {
	return &unparker{dir: cfg.Queues, store: cfg.QueueStats, log: cfg.Log, topics: cfg.Topics, now: cfg.Now}
}

// noQueues is the QueueDirectory of a server without queue settings.
type noQueues struct{}

func (noQueues) Queue(_, name string) *sluicev1.Queue      { return &sluicev1.Queue{Name: name} }
func (noQueues) ConfiguredQueues(string) []*sluicev1.Queue { return nil }
func (noQueues) UpdateQueue(context.Context, string, string, *eventv1.Actor, time.Time, func(*sluicev1.Queue)) (*sluicev1.Queue, error) {
	return nil, errors.New("queue settings are not configured")
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.Auth == nil {
		errs = append(errs, errors.New("api: Config.Auth: required"))
	}
	if c.Log == nil {
		errs = append(errs, errors.New("api: Config.Log: required"))
	}
	if c.Jobs == nil {
		errs = append(errs, errors.New("api: Config.Jobs: required"))
	}
	if c.DeadLetters == nil {
		errs = append(errs, errors.New("api: Config.DeadLetters: required"))
	}
	if c.Topics.Prefix == "" {
		errs = append(errs, errors.New("api: Config.Topics: required"))
	}
	if c.QueueStats != nil && c.Queues == nil {
		errs = append(errs, errors.New("api: Config.Queues: required with QueueStats"))
	}
	return errors.Join(errs...)
}

// NewHandler returns the HTTP handler of every API route.
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Ready == nil {
		cfg.Ready = func(context.Context) error { return nil }
	}
	opts := []connect.HandlerOption{
		connect.WithInterceptors(authInterceptor{cfg.Auth}),
		// A batch of 1,000 jobs at the payload limit, plus framing.
		connect.WithReadMaxBytes(cfg.Limits.MaxBatch*cfg.Limits.MaxPayloadBytes + 1<<20),
		// Compress only large answers: gzip costs more CPU than it saves
		// on the short links between clients, workers and the API.
		connect.WithCompressMinBytes(1 << 20),
	}
	amend := &amender{log: cfg.Log, store: cfg.DeadLetters, topics: cfg.Topics, now: cfg.Now}
	mux := http.NewServeMux()
	mux.Handle(sluicev1connect.NewJobServiceHandler(&JobService{
		log: cfg.Log, store: cfg.Jobs, amend: amend, topics: cfg.Topics,
		limits: cfg.Limits, now: cfg.Now, logger: cfg.Logger, endpoints: cfg.Endpoints,
		queues: cfg.Queues, idempotency: cfg.IdempotencyWindow,
	}, opts...))
	if cfg.QueueStats != nil {
		mux.Handle(sluicev1connect.NewQueueServiceHandler(&QueueService{
			dir: cfg.Queues, store: cfg.QueueStats, unpark: newUnparker(cfg), limits: cfg.Limits, now: cfg.Now, logger: cfg.Logger,
		}, opts...))
	}
	if cfg.Workers != nil {
		mux.Handle(sluicev1connect.NewWorkerServiceHandler(newWorkerService(cfg), opts...))
	}
	if cfg.Endpoints != nil {
		mux.Handle(sluicev1connect.NewEndpointServiceHandler(&EndpointService{
			store: cfg.Endpoints, jobs: cfg.Jobs, log: cfg.Log, topics: cfg.Topics, limits: cfg.Limits, now: cfg.Now, logger: cfg.Logger,
		}, opts...))
	}
	if cfg.Sources.Store != nil {
		mux.Handle(sluicev1connect.NewSourceServiceHandler(&SourceService{cfg: cfg.Sources, endpoints: cfg.Endpoints, now: cfg.Now, logger: cfg.Logger}, opts...))
	}
	if cfg.Audit.Timelines != nil {
		mux.Handle(sluicev1connect.NewAuditServiceHandler(&AuditService{
			trail: cfg.Audit.Trail, timelines: cfg.Audit.Timelines, trailTimeout: cfg.Audit.TrailTimeout, logger: cfg.Logger,
		}, opts...))
	}
	if cfg.Audit.Replays != nil {
		mux.Handle(sluicev1connect.NewReplayServiceHandler(&ReplayService{
			store: cfg.Audit.Replays, trail: cfg.Audit.Trail, endpoints: cfg.Endpoints, log: cfg.Log, topics: cfg.Topics, now: cfg.Now, logger: cfg.Logger,
		}, opts...))
	}
	mux.Handle(sluicev1connect.NewDeadLetterServiceHandler(&DeadLetterService{
		store: cfg.DeadLetters, amend: amend, limits: cfg.Limits, logger: cfg.Logger,
	}, opts...))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := cfg.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux, nil
}

// NewServer returns an http.Server for h that speaks HTTP/1.1 and HTTP/2
// without TLS (h2c), as gRPC clients need.
func NewServer(h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return srv
}
