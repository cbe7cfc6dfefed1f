package tenancy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// ErrUnknownEndpoint is returned for an endpoint id the tenant does not
// have.
var ErrUnknownEndpoint = errors.New("unknown endpoint")

// endpointKeyPrefix starts the config keys of endpoints:
// "endpoint/<tenant>/<id>".
const endpointKeyPrefix = "endpoint/"

// endpointHealthKeyPrefix starts the config keys of the health delivery
// records about endpoints: "endpointhealth/<tenant>/<id>".
const endpointHealthKeyPrefix = "endpointhealth/"

// EndpointConfigKey is the config topic key of a tenant's endpoint.
func EndpointConfigKey(tenantID, endpointID string) string {
	return endpointKeyPrefix + tenantID + "/" + endpointID
}

// EndpointHealthKey is the config topic key of the health delivery
// records about a tenant's endpoint.
func EndpointHealthKey(tenantID, endpointID string) string {
	return endpointHealthKeyPrefix + tenantID + "/" + endpointID
}

// NewEnableID draws the id of an endpoint's enable (EndpointConfig's
// enable_id): delivery's health records judged under an earlier enable no
// longer apply once it changes.
func NewEnableID() string { return eventlog.NewID() }

// endpointTable is the folded state of every endpoint; the Directory's mu
// guards it.
type endpointTable struct {
	byKey map[string]*endpointEntry // by "<tenant>/<id>"
	// enableOffset is the config offset of the latest record that enabled
	// a disabled endpoint; sluice.parked records compare against it.
	enableOffset int64
}

// endpointEntry is one endpoint: its settings as the API wrote them, the
// health delivery recorded, and the two folded into the effective config.
type endpointEntry struct {
	settings *eventv1.EndpointConfig // nil until read (compaction may order health first)
	health   *eventv1.EndpointHealth
	folded   *eventv1.EndpointConfig // nil while settings is
}

// effectiveEndpoint applies health to settings: its failure run, and its
// disable unless the settings disable the endpoint themselves. Health
// judged under another enable than the settings' current one is ignored:
// enabling an endpoint starts it afresh.
func effectiveEndpoint(settings *eventv1.EndpointConfig, health *eventv1.EndpointHealth) *eventv1.EndpointConfig {
	if settings == nil || health == nil || health.EnableId != settings.GetEnableId() {
		return settings
	}
	out := proto.CloneOf(settings)
	out.FailingSince = health.FailingSince
	if health.Disabled && !out.GetEndpoint().GetDisabled() && out.Endpoint != nil {
		out.Endpoint.Disabled, out.Endpoint.DisabledReason, out.Endpoint.DisabledAt = true, health.DisabledReason, health.DisabledAt
	}
	return out
}

// entry returns the endpoint's entry, created when missing; d.mu is held.
func (t *endpointTable) entry(k string) *endpointEntry {
	if t.byKey == nil {
		t.byKey = make(map[string]*endpointEntry)
	}
	e := t.byKey[k]
	if e == nil {
		e = &endpointEntry{}
		t.byKey[k] = e
	}
	return e
}

// refold recomputes e's effective config after a record at offset; a
// disabled endpoint that is now enabled moves the enable offset.
func (t *endpointTable) refold(e *endpointEntry, offset int64) {
	before := e.folded
	e.folded = effectiveEndpoint(e.settings, e.health)
	if before.GetEndpoint().GetDisabled() && e.folded != nil && !e.folded.GetEndpoint().GetDisabled() {
		t.enableOffset = offset
	}
}

// foldEndpoint applies an endpoint record read at offset; d.mu is held.
func (d *Directory) foldEndpoint(cfg *eventv1.EndpointConfig, offset int64) {
	t := &d.endpoints
	e := t.entry(cfg.TenantId + "/" + cfg.GetEndpoint().GetId())
	e.settings = cfg
	t.refold(e, offset)
}

// foldEndpointHealth applies an endpoint health record read at offset;
// d.mu is held.
func (d *Directory) foldEndpointHealth(h *eventv1.EndpointHealth, offset int64) {
	t := &d.endpoints
	e := t.entry(h.TenantId + "/" + h.EndpointId)
	e.health = h
	t.refold(e, offset)
}

// dropEndpoint applies an endpoint tombstone; d.mu is held.
func (d *Directory) dropEndpoint(key string, offset int64) {
	k := strings.TrimPrefix(key, endpointKeyPrefix)
	if _, ok := d.endpoints.byKey[k]; ok {
		delete(d.endpoints.byKey, k)
		// A deleted endpoint's parked messages are released, to die.
		d.endpoints.enableOffset = offset
	}
}

// dropEndpointHealth applies an endpoint health tombstone; d.mu is held.
func (d *Directory) dropEndpointHealth(key string, offset int64) {
	e, ok := d.endpoints.byKey[strings.TrimPrefix(key, endpointHealthKeyPrefix)]
	if !ok {
		return
	}
	e.health = nil
	d.endpoints.refold(e, offset)
}

// Endpoint returns a tenant's endpoint in effect: its settings with the
// health delivery recorded applied. The result is shared: do not modify
// it.
func (d *Directory) Endpoint(tenantID, endpointID string) (*eventv1.EndpointConfig, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	e, ok := d.endpoints.byKey[tenantID+"/"+endpointID]
	if !ok || e.folded == nil {
		return nil, fmt.Errorf("endpoint %s: %w", endpointID, ErrUnknownEndpoint)
	}
	return e.folded, nil
}

// EndpointSettings returns a tenant's endpoint as the API last wrote it,
// without the health delivery recorded: what an update starts from. The
// result is shared: do not modify it.
func (d *Directory) EndpointSettings(tenantID, endpointID string) (*eventv1.EndpointConfig, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	e, ok := d.endpoints.byKey[tenantID+"/"+endpointID]
	if !ok || e.settings == nil {
		return nil, fmt.Errorf("endpoint %s: %w", endpointID, ErrUnknownEndpoint)
	}
	return e.settings, nil
}

// Endpoints returns a tenant's endpoints, oldest first. The results are
// shared: do not modify them.
func (d *Directory) Endpoints(tenantID string) []*eventv1.EndpointConfig {
	d.mu.RLock()
	var out []*eventv1.EndpointConfig
	for _, e := range d.endpoints.byKey {
		if e.folded != nil && e.folded.TenantId == tenantID {
			out = append(out, e.folded)
		}
	}
	d.mu.RUnlock()
	slices.SortFunc(out, func(a, b *eventv1.EndpointConfig) int {
		ea, eb := a.GetEndpoint(), b.GetEndpoint()
		if c := ea.GetCreatedAt().AsTime().Compare(eb.GetCreatedAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(ea.GetId(), eb.GetId())
	})
	return out
}

// EndpointEnableOffset is the config offset of the latest record that
// enabled a disabled endpoint (or deleted one), and a channel closed at
// the next change of the folded config.
func (d *Directory) EndpointEnableOffset() (int64, <-chan struct{}) {
	changed := d.f.Changed() // before the read, so no change is missed
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.endpoints.enableOffset, changed
}

// EndpointRecord is the config record that stores cfg as the endpoint's
// settings, for callers that append it in their own transaction.
func (d *Directory) EndpointRecord(cfg *eventv1.EndpointConfig, actor *eventv1.Actor, now time.Time) (*kgo.Record, error) {
	cr := &eventv1.ConfigRecord{
		EventId: eventlog.NewID(), OccurredAt: timestamppb.New(now), Actor: actor,
		Body: &eventv1.ConfigRecord_Endpoint{Endpoint: cfg},
	}
	value, err := proto.Marshal(cr)
	if err != nil {
		return nil, fmt.Errorf("encode endpoint %s: %w", cfg.GetEndpoint().GetId(), err)
	}
	key := EndpointConfigKey(cfg.TenantId, cfg.GetEndpoint().GetId())
	return &kgo.Record{Topic: d.cfg.Topic, Key: []byte(key), Value: value}, nil
}

// EndpointHealthRecord is the config record that stores h as its
// endpoint's health, for delivery to append in its outcome transaction.
func (d *Directory) EndpointHealthRecord(h *eventv1.EndpointHealth, actor *eventv1.Actor, now time.Time) (*kgo.Record, error) {
	cr := &eventv1.ConfigRecord{
		EventId: eventlog.NewID(), OccurredAt: timestamppb.New(now), Actor: actor,
		Body: &eventv1.ConfigRecord_EndpointHealth{EndpointHealth: h},
	}
	value, err := proto.Marshal(cr)
	if err != nil {
		return nil, fmt.Errorf("encode health of endpoint %s: %w", h.EndpointId, err)
	}
	key := EndpointHealthKey(h.TenantId, h.EndpointId)
	return &kgo.Record{Topic: d.cfg.Topic, Key: []byte(key), Value: value}, nil
}

// PutEndpoint appends cfg as its endpoint's state and waits until this
// directory has folded it.
func (d *Directory) PutEndpoint(ctx context.Context, cfg *eventv1.EndpointConfig, actor *eventv1.Actor, now time.Time) error {
	rec, err := d.EndpointRecord(cfg, actor, now)
	if err != nil {
		return err
	}
	return d.produceSynced(ctx, rec)
}

// DeleteEndpoint appends the tombstones of a tenant's endpoint and of its
// health, and waits until this directory has folded them. The endpoint's
// goes first: a failure between the two leaves only an orphan health
// record, never an endpoint stripped of its health.
func (d *Directory) DeleteEndpoint(ctx context.Context, tenantID, endpointID string) error {
	rec := &kgo.Record{Topic: d.cfg.Topic, Key: []byte(EndpointConfigKey(tenantID, endpointID))}
	if err := d.produceSynced(ctx, rec); err != nil {
		return err
	}
	return d.produceSynced(ctx, &kgo.Record{Topic: d.cfg.Topic, Key: []byte(EndpointHealthKey(tenantID, endpointID))})
}

func (d *Directory) produceSynced(ctx context.Context, rec *kgo.Record) error {
	if err := d.f.Append(ctx, string(rec.Key), rec.Value); err != nil {
		return fmt.Errorf("tenancy: %w", err)
	}
	return nil
}
