package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// park holds an attempt for a disabled endpoint back: its job.ready goes
// to sluice.parked, unchanged (no attempt counted), and an
// endpoint.message_parked event records it on the job's timeline.
func (d *Deliverer) park(rec *kgo.Record, ev *eventv1.Event, r run, endpointID string) ([]*kgo.Record, error) {
	now := d.cfg.Now()
	ready := eventlog.NewEvent(eventlog.Meta{
		TenantID: ev.TenantId, JobID: ev.JobId, EventID: eventlog.DeriveID(rec, 0),
		CausationID: ev.EventId, OccurredAt: now, Actor: deliveryActor,
	}, &eventv1.JobReady{Attempt: r.attempt, BudgetStart: r.budget, Spec: r.spec, History: r.history})
	parked, err := d.parkedRecord(ready, endpointID)
	if err != nil {
		return nil, err
	}
	note := eventlog.NewEvent(eventlog.Meta{
		TenantID: ev.TenantId, JobID: ev.JobId, EventID: eventlog.DeriveID(rec, 1),
		CausationID: ev.EventId, OccurredAt: now, Actor: deliveryActor,
	}, &eventv1.EndpointMessageParked{EndpointId: endpointID, Attempt: r.attempt})
	out, err := eventlog.EncodeEvent(d.cfg.Topics.Events(), note)
	if err != nil {
		return nil, err
	}
	return []*kgo.Record{parked, out}, nil
}

// parkedRecord is the sluice.parked record holding ready for endpointID.
func (d *Deliverer) parkedRecord(ready *eventv1.Event, endpointID string) (*kgo.Record, error) {
	var offset int64
	if d.cfg.Endpoints != nil {
		offset, _ = d.cfg.Endpoints.EndpointEnableOffset()
	}
	return encodeParked(d.cfg.Topics, &eventv1.ParkedMessage{Event: ready, EndpointId: endpointID, EnableOffset: offset})
}

func encodeParked(topics eventlog.Topics, pm *eventv1.ParkedMessage) (*kgo.Record, error) {
	value, err := proto.Marshal(pm)
	if err != nil {
		return nil, fmt.Errorf("encode parked message of job %s: %w", pm.GetEvent().GetJobId(), err)
	}
	return &kgo.Record{Topic: topics.Parked(), Key: []byte(pm.GetEvent().GetJobId()), Value: value}, nil
}

// ReleaserConfig configures a Releaser.
type ReleaserConfig struct {
	// Topics names the parked and events topics. Required.
	Topics eventlog.Topics
	// Endpoints tells which endpoints are enabled. Required.
	Endpoints EndpointSource
	// DrainRate is how many parked messages per second one node releases
	// to one endpoint once it is enabled again. Default 50.
	DrainRate float64
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Releaser serves sluice.parked: its Handle, run with one record in flight
// per partition, holds each parked message until its endpoint is enabled
// (or deleted) and then appends its job.ready to sluice.events, paced by
// DrainRate, with a tombstone for the parked record in the same
// transaction. A message whose endpoint is still disabled when another
// endpoint is enabled goes to the back of its partition, so the messages
// behind it are looked at; otherwise the partition waits, reading nothing.
type Releaser struct {
	cfg ReleaserConfig

	mu    sync.Mutex
	paces map[string]*rate.Limiter // by "<tenant>/<endpoint id>"
}

// NewReleaser returns a Releaser.
func NewReleaser(cfg ReleaserConfig) (*Releaser, error) {
	var errs []error
	if cfg.Topics.Prefix == "" {
		errs = append(errs, errors.New("delivery: ReleaserConfig.Topics: required"))
	}
	if cfg.Endpoints == nil {
		errs = append(errs, errors.New("delivery: ReleaserConfig.Endpoints: required"))
	}
	if cfg.DrainRate < 0 {
		errs = append(errs, errors.New("delivery: ReleaserConfig.DrainRate: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.DrainRate == 0 {
		cfg.DrainRate = 50
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Releaser{cfg: cfg, paces: make(map[string]*rate.Limiter)}, nil
}

// Handle holds one parked record until it can be released; see Releaser.
func (r *Releaser) Handle(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error) {
	if len(rec.Value) == 0 {
		return nil, nil // a release's tombstone
	}
	var pm eventv1.ParkedMessage
	if err := proto.Unmarshal(rec.Value, &pm); err != nil {
		r.cfg.Logger.ErrorContext(ctx, "skip undecodable parked message", "partition", rec.Partition, "offset", rec.Offset, "error", err)
		return nil, nil
	}
	tenant, id := pm.GetEvent().GetTenantId(), pm.GetEndpointId()
	for {
		enables, changed := r.cfg.Endpoints.EndpointEnableOffset()
		cfg, ok := r.cfg.Endpoints.Endpoint(tenant, id)
		switch {
		case !ok || !cfg.GetEndpoint().GetDisabled():
			return r.release(ctx, rec, &pm)
		case enables > pm.EnableOffset:
			// Another endpoint was enabled: make way for the records behind.
			pm.EnableOffset = enables
			again, err := encodeParked(r.cfg.Topics, &pm)
			if err != nil {
				return nil, err
			}
			return []*kgo.Record{again}, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// release appends the parked job.ready, paced per endpoint, and the
// parked record's tombstone.
func (r *Releaser) release(ctx context.Context, rec *kgo.Record, pm *eventv1.ParkedMessage) ([]*kgo.Record, error) {
	if err := r.pace(pm.GetEvent().GetTenantId() + "/" + pm.GetEndpointId()).Wait(ctx); err != nil {
		return nil, fmt.Errorf("wait to release job %s: %w", pm.GetEvent().GetJobId(), err)
	}
	ready, err := eventlog.EncodeEvent(r.cfg.Topics.Events(), pm.GetEvent())
	if err != nil {
		return nil, err
	}
	return []*kgo.Record{ready, {Topic: rec.Topic, Key: rec.Key}}, nil
}

func (r *Releaser) pace(key string) *rate.Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.paces[key]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(r.cfg.DrainRate), max(1, int(r.cfg.DrainRate)))
		r.paces[key] = l
	}
	return l
}
