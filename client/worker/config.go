package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Config configures a Worker. Zero fields take the defaults their
// comments name.
type Config struct {
	// Queue is the queue to work. Required.
	Queue string
	// WorkerID names this worker in job histories. Default
	// "<hostname>-<pid>".
	WorkerID string
	// Concurrency is the handlers running at once. Default 10.
	Concurrency int
	// LeaseDuration is how long each lease lasts; the server accepts
	// 1s-1h. Default 30s.
	LeaseDuration time.Duration
	// HeartbeatInterval is how often a running job's lease is extended
	// (by LeaseDuration). Default LeaseDuration/2; it must be shorter than
	// LeaseDuration.
	HeartbeatInterval time.Duration
	// ClaimWait is how long a claim waits on the server for a job when
	// none is ready (at most 30s). Default 5s.
	ClaimWait time.Duration
	// Stream claims over the server-streaming ClaimStream instead of
	// polling Claim: jobs arrive as soon as they are ready. Default false.
	Stream bool
	// CompleteBatch is the most completions sent in one CompleteBatch
	// call; completions that finish while a call is under way go in the
	// next. 1 sends each with Complete. Default 100, at most 1,000.
	CompleteBatch int
	// DrainTimeout bounds a graceful drain: when Run's context is
	// cancelled, handlers still running after DrainTimeout have their
	// contexts cancelled. Default 0: wait for every handler.
	DrainTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "worker"
		}
		c.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Concurrency == 0 {
		c.Concurrency = 10
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 30 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = c.LeaseDuration / 2
	}
	if c.ClaimWait == 0 {
		c.ClaimWait = 5 * time.Second
	}
	if c.CompleteBatch == 0 {
		c.CompleteBatch = 100
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with c (after WithDefaults).
func (c Config) Validate() error {
	var errs []error
	if c.Queue == "" {
		errs = append(errs, errors.New("worker: Config.Queue: required"))
	}
	if c.Concurrency < 1 || c.Concurrency > 1000 {
		errs = append(errs, fmt.Errorf("worker: Config.Concurrency: %d is not within 1-1000", c.Concurrency))
	}
	if c.LeaseDuration < 0 {
		errs = append(errs, fmt.Errorf("worker: Config.LeaseDuration: %s is negative", c.LeaseDuration))
	}
	if c.HeartbeatInterval <= 0 || c.HeartbeatInterval >= c.LeaseDuration {
		errs = append(errs, fmt.Errorf("worker: Config.HeartbeatInterval: %s must be positive and shorter than LeaseDuration %s", c.HeartbeatInterval, c.LeaseDuration))
	}
	if c.ClaimWait < 0 || c.ClaimWait > 30*time.Second {
		errs = append(errs, fmt.Errorf("worker: Config.ClaimWait: %s is not within 0-30s", c.ClaimWait))
	}
	if c.CompleteBatch < 1 || c.CompleteBatch > 1000 {
		errs = append(errs, fmt.Errorf("worker: Config.CompleteBatch: %d is not within 1-1000", c.CompleteBatch))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("worker: Config.DrainTimeout: %s is negative", c.DrainTimeout))
	}
	return errors.Join(errs...)
}
