package delivery

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// QueueControl reads what delivery needs of queue settings;
// tenancy.Directory implements it.
type QueueControl interface {
	// QueueControl returns whether a queue is paused, its running limit
	// and its rate limit (jobs per second); zeros mean none.
	QueueControl(tenantID, queue string) (paused bool, concurrency int, perSecond float64)
}

// winnerWait bounds how long delivery waits for the read model to show
// which job.enqueued of an idempotency key won, before the runner retries
// the record.
const winnerWait = 5 * time.Second

// gate decides whether an attempt runs now. It holds the attempt back
// (held, with the records to write instead) when:
//   - the record is a job.enqueued that lost its idempotency key to an
//     earlier one, or a job.ready descending from such a loser (a runAt
//     timer the loser wrote): nothing is written, the job runs once;
//   - the job's queue is paused: a job.parked holds the job until the
//     queue resumes;
//   - the queue runs its concurrency limit on this node, or its rate
//     limit is spent: the attempt is deferred unchanged (deferRun).
//
// cur is where the read model had the job when the attempt was picked up.
// Otherwise release must be called once the attempt ends.
func (d *Deliverer) gate(ctx context.Context, rec *kgo.Record, ev *eventv1.Event, r run, cur JobRun) (out []*kgo.Record, held bool, release func(), err error) {
	if r.spec.GetIdempotencyKey() != "" && d.states != nil {
		won, err := d.wonKey(ctx, ev, r, cur)
		if err != nil || !won {
			return nil, true, nil, err
		}
	}
	if d.cfg.Queues == nil {
		return nil, false, func() {}, nil
	}
	tenant, queue := ev.TenantId, r.spec.GetQueue()
	paused, limit, perSecond := d.cfg.Queues.QueueControl(tenant, queue)
	if paused {
		out, err := d.holdForQueue(rec, ev, r)
		return out, true, nil, err
	}
	// A slot first, then a start: a deferred attempt spends no start.
	release, ok := d.queues.Acquire(tenant, queue, limit)
	if ok && d.queues.Take(tenant, queue, perSecond, 1, d.cfg.Now()) == 0 {
		release()
		ok = false
	}
	if !ok {
		d.cfg.Observer.Deferred(queue)
		out, err := d.deferRun(rec, ev, r)
		return out, true, nil, err
	}
	return nil, false, release, nil
}

// wonKey reports whether ev, of a job with an idempotency key, belongs to
// the job.enqueued that created the job: the read model names the first
// job.enqueued of the job's id in log order, and the creation time in its
// spec, which every job.ready of the job carries on.
// cur is the job's state already read; it is read again only while the
// read model has not shown the job.enqueued.
func (d *Deliverer) wonKey(ctx context.Context, ev *eventv1.Event, r run, cur JobRun) (bool, error) {
	deadline := d.cfg.Now().Add(winnerWait)
	pause := time.Millisecond
	for read := false; ; read = true {
		if read {
			var err error
			if cur, err = d.states.state(ctx, ev.TenantId, ev.JobId); err != nil {
				return false, fmt.Errorf("read state of job %s: %w", ev.JobId, err)
			}
		}
		if cur.Purged {
			return false, nil // a purged job's key: nothing runs
		}
		if cur.EnqueueEventID != "" {
			if _, first := ev.Body.(*eventv1.Event_JobEnqueued); first {
				return cur.EnqueueEventID == ev.EventId, nil
			}
			return cur.CreatedAt == 0 || r.spec.GetCreatedAt().AsTime().UnixMicro() == cur.CreatedAt, nil
		}
		if d.cfg.Now().After(deadline) {
			return false, fmt.Errorf("job %s: the read model has not shown its job.enqueued within %s", ev.JobId, winnerWait)
		}
		select {
		case <-time.After(pause):
			pause = min(2*pause, 50*time.Millisecond)
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// holdForQueue holds a job of a paused queue back: a job.parked with the attempt
// it was about to run, which resuming the queue turns into a job.ready.
func (d *Deliverer) holdForQueue(rec *kgo.Record, ev *eventv1.Event, r run) ([]*kgo.Record, error) {
	parked := eventlog.NewEvent(eventlog.Meta{
		TenantID: ev.TenantId, JobID: ev.JobId, EventID: eventlog.DeriveID(rec, 0),
		CausationID: ev.EventId, OccurredAt: d.cfg.Now(),
		Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "delivery"},
	}, &eventv1.JobParked{Attempt: r.attempt, BudgetStart: r.budget})
	out, err := eventlog.EncodeEvent(d.cfg.Topics.Events(), parked)
	if err != nil {
		return nil, err
	}
	return []*kgo.Record{out}, nil
}
