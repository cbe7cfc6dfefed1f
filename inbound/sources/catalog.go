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

	"github.com/twmb/franz-go/pkg/kadm"
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
	cl  *kgo.Client

	mu      sync.RWMutex
	byID    map[string]*Entry
	applied map[int32]int64 // next offset folded, per partition
	changed chan struct{}   // closed and replaced on every fold

	cancel context.CancelFunc
	done   chan struct{}
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
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
	}, cfg.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("sources: new client: %w", err)
	}
	return &Catalog{
		cfg:     cfg,
		cl:      cl,
		byID:    make(map[string]*Entry),
		applied: make(map[int32]int64),
		changed: make(chan struct{}),
	}, nil
}

// Start folds the topic up to its current end, then keeps folding in the
// background. It returns once the catalog is current.
func (c *Catalog) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.done = make(chan struct{})
	go c.run(runCtx)
	return c.Sync(ctx)
}

// Stop ends folding and closes the client.
func (c *Catalog) Stop(context.Context) error {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
	c.cl.Close()
	return nil
}

// Sync waits until everything committed to the topic before the call is
// folded.
func (c *Catalog) Sync(ctx context.Context) error {
	ends, err := kadm.NewClient(c.cl).ListEndOffsets(ctx, c.cfg.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("sources: list end offsets of %s: %w", c.cfg.Topic, err)
	}
	for {
		c.mu.RLock()
		behind := false
		ends.Each(func(o kadm.ListedOffset) {
			if c.applied[o.Partition] < o.Offset {
				behind = true
			}
		})
		changed := c.changed
		c.mu.RUnlock()
		if !behind {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("sources: sync %s: %w", c.cfg.Topic, ctx.Err())
		}
	}
}

func (c *Catalog) run(ctx context.Context) {
	defer close(c.done)
	for {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			c.cfg.Logger.Warn("fetch config", "topic", topic, "partition", p, "error", err)
		})
		c.mu.Lock()
		fs.EachRecord(c.fold)
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// fold applies one config record; c.mu is held. Records of other kinds
// are skipped.
func (c *Catalog) fold(rec *kgo.Record) {
	c.applied[rec.Partition] = rec.Offset + 1
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
	rec := &kgo.Record{Topic: c.cfg.Topic, Key: []byte(key), Value: value}
	if err := c.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("append %s to %s: %w", key, c.cfg.Topic, err)
	}
	return c.Sync(ctx)
}
