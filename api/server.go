package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
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
	// Ready reports whether the node can serve (Kafka reachable, roles
	// started); /readyz answers 503 with its error. Default: always ready.
	Ready func(ctx context.Context) error
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
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
	return errors.Join(errs...)
}

// NewHandler returns the HTTP handler of every API route.
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.WithDefaults()
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
	}
	amend := &amender{log: cfg.Log, store: cfg.DeadLetters, topics: cfg.Topics, now: cfg.Now}
	mux := http.NewServeMux()
	mux.Handle(sluicev1connect.NewJobServiceHandler(&JobService{
		log: cfg.Log, store: cfg.Jobs, amend: amend, topics: cfg.Topics,
		limits: cfg.Limits, now: cfg.Now, logger: cfg.Logger,
	}, opts...))
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
