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

// EndpointConfigKey is the config topic key of a tenant's endpoint.
func EndpointConfigKey(tenantID, endpointID string) string {
	return endpointKeyPrefix + tenantID + "/" + endpointID
}

// endpointTable is the folded state of every endpoint; the Directory's mu
// guards it.
type endpointTable struct {
	byKey map[string]*eventv1.EndpointConfig // by "<tenant>/<id>"
	// enableOffset is the config offset of the latest record that enabled
	// a disabled endpoint; sluice.parked records compare against it.
	enableOffset int64
}

// foldEndpoint applies an endpoint record read at offset; d.mu is held.
func (d *Directory) foldEndpoint(cfg *eventv1.EndpointConfig, offset int64) {
	t := &d.endpoints
	if t.byKey == nil {
		t.byKey = make(map[string]*eventv1.EndpointConfig)
	}
	k := cfg.TenantId + "/" + cfg.GetEndpoint().GetId()
	if old, ok := t.byKey[k]; ok && old.GetEndpoint().GetDisabled() && !cfg.GetEndpoint().GetDisabled() {
		t.enableOffset = offset
	}
	t.byKey[k] = cfg
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

// Endpoint returns a tenant's endpoint. The result is shared: do not
// modify it.
func (d *Directory) Endpoint(tenantID, endpointID string) (*eventv1.EndpointConfig, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	cfg, ok := d.endpoints.byKey[tenantID+"/"+endpointID]
	if !ok {
		return nil, fmt.Errorf("endpoint %s: %w", endpointID, ErrUnknownEndpoint)
	}
	return cfg, nil
}

// Endpoints returns a tenant's endpoints, oldest first. The results are
// shared: do not modify them.
func (d *Directory) Endpoints(tenantID string) []*eventv1.EndpointConfig {
	d.mu.RLock()
	var out []*eventv1.EndpointConfig
	for _, cfg := range d.endpoints.byKey {
		if cfg.TenantId == tenantID {
			out = append(out, cfg)
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

// EndpointRecord is the config record that stores cfg, for callers that
// append it in their own transaction.
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

// PutEndpoint appends cfg as its endpoint's state and waits until this
// directory has folded it.
func (d *Directory) PutEndpoint(ctx context.Context, cfg *eventv1.EndpointConfig, actor *eventv1.Actor, now time.Time) error {
	rec, err := d.EndpointRecord(cfg, actor, now)
	if err != nil {
		return err
	}
	return d.produceSynced(ctx, rec)
}

// DeleteEndpoint appends the tombstone of a tenant's endpoint and waits
// until this directory has folded it.
func (d *Directory) DeleteEndpoint(ctx context.Context, tenantID, endpointID string) error {
	rec := &kgo.Record{Topic: d.cfg.Topic, Key: []byte(EndpointConfigKey(tenantID, endpointID))}
	return d.produceSynced(ctx, rec)
}

func (d *Directory) produceSynced(ctx context.Context, rec *kgo.Record) error {
	if err := d.f.Append(ctx, string(rec.Key), rec.Value); err != nil {
		return fmt.Errorf("tenancy: %w", err)
	}
	return nil
}
