package worker

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/client"
)

// heartbeater extends one job's lease while its handler runs.
type heartbeater struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// stop ends the heartbeats and waits for the goroutine.
func (h *heartbeater) stop() {
	h.cancel()
	<-h.done
}

// heartbeat extends job's lease every HeartbeatInterval by LeaseDuration.
// When the server refuses the lease, or the lease runs out before a
// heartbeat gets through, it cancels the handler with ErrLeaseLost.
func (w *Worker) heartbeat(ctx context.Context, job *Job, lost context.CancelCauseFunc, log *slog.Logger) *heartbeater {
	ctx, cancel := context.WithCancel(ctx)
	h := &heartbeater{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		expires := job.LeaseExpiresAt
		wait := w.cfg.HeartbeatInterval
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			next, err := w.c.Heartbeat(ctx, job.ID, job.leaseToken, w.cfg.LeaseDuration)
			switch {
			case err == nil:
				expires, wait = next, w.cfg.HeartbeatInterval
			case ctx.Err() != nil:
				return
			case leaseGone(err) || !time.Now().Before(expires):
				log.Warn("lease lost", "error", err)
				lost(ErrLeaseLost)
				return
			default:
				// Try again soon, while the lease lasts.
				log.Warn("heartbeat failed; retrying", "error", err)
				wait = min(time.Second, max(time.Until(expires)/4, 10*time.Millisecond))
			}
		}
	}()
	return h
}

// leaseGone reports whether a heartbeat error means the lease is over.
func leaseGone(err error) bool {
	switch client.CodeOf(err) {
	case connect.CodeFailedPrecondition, connect.CodeNotFound:
		return true
	}
	return false
}
