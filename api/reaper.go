package api

import (
	"context"
	"log/slog"
	"time"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// reapInterval is how often expired leases are looked for.
const reapInterval = 250 * time.Millisecond

// LeaseReaper fails the attempts of leases that expired: each counts as a
// failed attempt ("lease expired") and the job follows its retry policy.
// Any number of nodes may run one; each expired lease is ended by exactly
// one of them.
type LeaseReaper struct {
	workers *WorkerService
	sweep   func(ctx context.Context)
	logger  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs the reaper until Stop.
func (r *LeaseReaper) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go r.run(ctx)
}

// Stop ends the reaper and waits for it.
func (r *LeaseReaper) Stop(context.Context) error {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	return nil
}

func (r *LeaseReaper) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	sweepEvery := int(5 * time.Second / reapInterval)
	for tick := 0; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for r.reap(ctx) {
		}
		if tick%sweepEvery == 0 && r.sweep != nil {
			r.sweep(ctx)
		}
	}
}

// reap ends a batch of expired leases and reports whether there may be
// more.
func (r *LeaseReaper) reap(ctx context.Context) bool {
	s := r.workers
	now := s.now()
	const batch = 100
	expired, err := s.store.ExpiredLeases(ctx, now, batch)
	if err != nil {
		r.logger.WarnContext(ctx, "read expired leases", "error", err)
		return false
	}
	for _, e := range expired {
		l, err := s.store.FinishLease(ctx, e.TenantID, e.JobID, e.Token, true, now)
		if err != nil {
			continue // another node ended it, or the worker finished in time
		}
		actor := &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "leases"}
		if _, err := s.fail(ctx, e.TenantID, l, "lease expired", false, actor, now); err != nil {
			r.logger.WarnContext(ctx, "fail expired lease; retrying", "job_id", e.JobID, "error", err)
			if rerr := s.store.RestoreLease(context.WithoutCancel(ctx), e.TenantID, e.JobID, e.Token, now); rerr != nil {
				r.logger.ErrorContext(ctx, "restore expired lease", "job_id", e.JobID, "error", rerr)
			}
			return false
		}
		r.logger.DebugContext(ctx, "lease expired", "tenant_id", e.TenantID, "job_id", e.JobID, "attempt", l.Attempt)
	}
	return len(expired) == batch
}
