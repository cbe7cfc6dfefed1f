package tenancy

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// queueKeyPrefix starts the config key of a queue's settings:
// "queue/<tenant>/<name>". Queue names hold no "/".
const queueKeyPrefix = "queue/"

func queueKey(tenantID, name string) string { return queueKeyPrefix + tenantID + "/" + name }

// foldQueue applies a queue's settings; d.mu is held.
func (d *Directory) foldQueue(qs *eventv1.QueueSettings) {
	q := qs.GetQueue()
	if qs.GetTenantId() == "" || q.GetName() == "" {
		return
	}
	byName := d.queues[qs.TenantId]
	if byName == nil {
		byName = make(map[string]*sluicev1.Queue)
		d.queues[qs.TenantId] = byName
	}
	byName[q.Name] = q
}

// deleteQueue applies the tombstone of a queue's settings; d.mu is held.
func (d *Directory) deleteQueue(key string) {
	tenantID, name, ok := strings.Cut(strings.TrimPrefix(key, queueKeyPrefix), "/")
	if !ok {
		return
	}
	delete(d.queues[tenantID], name)
}

// Queue returns the settings of a tenant's queue: a queue nobody
// configured has the zero settings (not paused, server defaults, no
// limits). The result is a copy.
func (d *Directory) Queue(tenantID, name string) *sluicev1.Queue {
	d.mu.RLock()
	q, ok := d.queues[tenantID][name]
	d.mu.RUnlock()
	if !ok {
		return &sluicev1.Queue{Name: name}
	}
	return proto.CloneOf(q)
}

// ConfiguredQueues returns the tenant's queues that have settings, by
// name.
func (d *Directory) ConfiguredQueues(tenantID string) []*sluicev1.Queue {
	d.mu.RLock()
	out := make([]*sluicev1.Queue, 0, len(d.queues[tenantID]))
	for _, q := range d.queues[tenantID] {
		out = append(out, proto.CloneOf(q))
	}
	d.mu.RUnlock()
	slices.SortFunc(out, func(a, b *sluicev1.Queue) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// UpdateQueue reads a tenant's queue settings, lets change edit them and
// appends the result to the config topic as actor, then waits until this
// directory has folded it. Concurrent updates of one queue are last
// writer wins, field by field only within one call.
func (d *Directory) UpdateQueue(ctx context.Context, tenantID, name string, actor *eventv1.Actor, now time.Time, change func(*sluicev1.Queue)) (*sluicev1.Queue, error) {
	q := d.Queue(tenantID, name)
	change(q)
	q.Name = name
	q.UpdatedAt = timestamppb.New(now)
	cr := &eventv1.ConfigRecord{
		Actor: actor,
		Body:  &eventv1.ConfigRecord_Queue{Queue: &eventv1.QueueSettings{TenantId: tenantID, Queue: q}},
	}
	if err := d.append(ctx, queueKey(tenantID, name), cr, now); err != nil {
		return nil, err
	}
	if err := d.Sync(ctx); err != nil {
		return nil, err
	}
	return proto.CloneOf(q), nil
}

// QueueControl returns what delivery needs of a queue's settings, without
// copying them: whether it is paused, its running limit and its rate
// limit (jobs per second); zeros mean none.
func (d *Directory) QueueControl(tenantID, name string) (paused bool, concurrency int, perSecond float64) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	q := d.queues[tenantID][name]
	return q.GetPaused(), int(q.GetConcurrencyLimit()), q.GetRateLimit()
}
