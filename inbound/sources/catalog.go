// Package sources keeps every tenant's inbound webhook sources: it folds
// the "source/<tenant>/<id>" records of the compacted config topic into
// memory and appends changes to it.
//
// A node sees its own changes at once (Put and Delete return after the
// change is folded); other nodes see them as soon as they fold the
// record, usually within milliseconds.
package sources

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/inbound/verify"
	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// ErrNotFound is returned for a source that does not exist, or belongs to
// another tenant.
var ErrNotFound = errors.New("source not found")

// KeyPrefix starts the config-topic key of every source.
const KeyPrefix = "source/"

// Key is a source's config-topic key.
func Key(tenantID, id string) string { return KeyPrefix + tenantID + "/" + id }

// IDPrefix starts every source id.
const IDPrefix = "src_"

// NewID returns a new source id.
func NewID() string { return IDPrefix + eventlog.NewID() }

// Entry is a source as folded: its tenant, settings and verifier.
type Entry struct {
	TenantID string
	Source   *sluicev1.Source
	// Verifier checks its requests; nil when the stored settings no
	// longer build one (the receiver then refuses every request).
	Verifier verify.Verifier
}

// Config configures a Catalog.
type Config struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// Topic is the compacted config topic. Required.
	Topic string
	// ClientOpts are added to the client.
	ClientOpts []kgo.Opt
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Catalog folds sources from the config topic and answers lookups.
type Catalog struct {
	cfg Config
	f   *eventlog.Follower

	mu   sync.RWMutex
	byID map[string]*Entry
}

// New creates a Catalog; Start begins folding.
func New(cfg Config) (*Catalog, error) {
	var errs []error
	if len(cfg.Brokers) == 0 {
		errs = append(errs, errors.New("sources: Config.Brokers: required"))
	}
	if cfg.Topic == "" {
		errs = append(errs, errors.New("sources: Config.Topic: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Catalog{cfg: cfg, byID: make(map[string]*Entry)}
	f, err := eventlog.NewFollower(eventlog.FollowerConfig{
		Brokers: cfg.Brokers, Topic: cfg.Topic, ClientOpts: cfg.ClientOpts, Logger: cfg.Logger,
		Fold: func(rec *kgo.Record) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.fold(rec)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("sources: %w", err)
	}
	c.f = f
	return c, nil
}

// Start folds the topic up to its current end, then keeps folding in the
// background. It returns once the catalog is current.
func (c *Catalog) Start(ctx context.Context) error {
	if err := c.f.Start(ctx); err != nil {
		return fmt.Errorf("sources: %w", err)
	}
	return nil
}

// Stop ends folding and closes the client.
func (c *Catalog) Stop(ctx context.Context) error { return c.f.Stop(ctx) }

// Sync waits until everything committed to the topic before the call is
// folded.
func (c *Catalog) Sync(ctx context.Context) error {
	if err := c.f.Sync(ctx); err != nil {
		return fmt.Errorf("sources: %w", err)
	}
	return nil
}

// fold applies one config record; c.mu is held. Records of other kinds
// are skipped.
func (c *Catalog) fold(rec *kgo.Record) {
	key := string(rec.Key)
	rest, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok {
		return
	}
	if len(rec.Value) == 0 { // tombstone
		if _, id, ok := strings.Cut(rest, "/"); ok {
			delete(c.byID, id)
		}
		return
	}
	var cr eventv1.ConfigRecord
	if err := proto.Unmarshal(rec.Value, &cr); err != nil {
		c.cfg.Logger.Error("decode config record", "key", key, "offset", rec.Offset, "error", err)
		return
	}
	sc := cr.GetSource()
	if sc == nil || sc.GetSource().GetId() == "" {
		c.cfg.Logger.Error("config record under a source key holds no source", "key", key, "offset", rec.Offset)
		return
	}
	e := &Entry{TenantID: sc.TenantId, Source: sc.Source}
	v, err := verify.New(sc.Source.Verification, "verification")
	if err != nil {
		c.cfg.Logger.Error("source settings do not build a verifier; refusing its requests",
			"source_id", sc.Source.Id, "tenant_id", sc.TenantId, "error", err)
	} else {
		e.Verifier = v
	}
	c.byID[sc.Source.Id] = e
}

// Entry returns a source by id, whatever its tenant: the receiver and the
// router know only the id.
func (c *Catalog) Entry(id string) (*Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.byID[id]
	return e, ok
}

// Get returns a tenant's source; ErrNotFound for another tenant's.
func (c *Catalog) Get(tenantID, id string) (*sluicev1.Source, error) {
	e, ok := c.Entry(id)
	if !ok || e.TenantID != tenantID {
		return nil, fmt.Errorf("source %s: %w", id, ErrNotFound)
	}
	return proto.CloneOf(e.Source), nil
}

// List returns a tenant's sources by id.
func (c *Catalog) List(tenantID string) []*sluicev1.Source {
	c.mu.RLock()
	var out []*sluicev1.Source
	for _, e := range c.byID {
		if e.TenantID == tenantID {
			out = append(out, proto.CloneOf(e.Source))
		}
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// Put stores a tenant's source (new or changed) and returns once this
// catalog has folded it.
func (c *Catalog) Put(ctx context.Context, tenantID string, src *sluicev1.Source, actor *eventv1.Actor, now time.Time) error {
	cr := &eventv1.ConfigRecord{
		EventId:    eventlog.NewID(),
		OccurredAt: timestamppb.New(now),
		Actor:      actor,
		Body:       &eventv1.ConfigRecord_Source{Source: &eventv1.SourceConfig{TenantId: tenantID, Source: src}},
	}
	value, err := proto.Marshal(cr)
	if err != nil {
		return fmt.Errorf("encode source %s: %w", src.Id, err)
	}
	return c.append(ctx, Key(tenantID, src.Id), value)
}

// Delete removes a tenant's source and returns once this catalog has
// folded the removal.
func (c *Catalog) Delete(ctx context.Context, tenantID, id string) error {
	return c.append(ctx, Key(tenantID, id), nil)
}

func (c *Catalog) append(ctx context.Context, key string, value []byte) error {
	if err := c.f.Append(ctx, key, value); err != nil {
		return fmt.Errorf("sources: %w", err)
	}
	return nil
}
