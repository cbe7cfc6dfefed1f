package tenancy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// ErrUnknownKey is returned for a key that resolves to no tenant.
var ErrUnknownKey = errors.New("unknown api key")

// ErrUnknownTenant is returned for a tenant id that does not exist.
var ErrUnknownTenant = errors.New("unknown tenant")

// Principal is who an API call acts as.
type Principal struct {
	TenantID string
	// KeyID is the public id of the key used.
	KeyID string
}

// Config configures a Directory.
type Config struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// Topic is the compacted config topic. Required.
	Topic string
	// ClientOpts are added to the consumer client.
	ClientOpts []kgo.Opt
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Directory folds the config topic into memory and answers key and tenant
// lookups from it.
type Directory struct {
	cfg Config
	cl  *kgo.Client

	mu      sync.RWMutex
	tenants map[string]*eventv1.Tenant
	keys    map[string]*eventv1.APIKey            // by hash
	queues  map[string]map[string]*sluicev1.Queue // by tenant, then name
	applied map[int32]int64                       // next offset folded, per partition
	// endpoints is folded in endpoints.go.
	endpoints endpointTable
	changed   chan struct{} // closed and replaced on every fold

	cancel context.CancelFunc
	done   chan struct{}
}

// NewDirectory creates a Directory; Start begins folding.
func NewDirectory(cfg Config) (*Directory, error) {
	var errs []error
	if len(cfg.Brokers) == 0 {
		errs = append(errs, errors.New("tenancy: Config.Brokers: required"))
	}
	if cfg.Topic == "" {
		errs = append(errs, errors.New("tenancy: Config.Topic: required"))
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
		return nil, fmt.Errorf("tenancy: new client: %w", err)
	}
	return &Directory{
		cfg:     cfg,
		cl:      cl,
		tenants: make(map[string]*eventv1.Tenant),
		keys:    make(map[string]*eventv1.APIKey),
		queues:  make(map[string]map[string]*sluicev1.Queue),
		applied: make(map[int32]int64),
		changed: make(chan struct{}),
	}, nil
}

// Start folds the topic up to its current end, then keeps folding in the
// background. It returns once the directory is current.
func (d *Directory) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	d.done = make(chan struct{})
	go d.run(runCtx)
	return d.Sync(ctx)
}

// Stop ends folding and closes the client.
func (d *Directory) Stop(context.Context) error {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	d.cl.Close()
	return nil
}

// Sync waits until everything committed to the topic before the call is
// folded.
func (d *Directory) Sync(ctx context.Context) error {
	ends, err := kadm.NewClient(d.cl).ListEndOffsets(ctx, d.cfg.Topic)
	if err != nil {
		return fmt.Errorf("tenancy: list end offsets of %s: %w", d.cfg.Topic, err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("tenancy: list end offsets of %s: %w", d.cfg.Topic, err)
	}
	for {
		d.mu.RLock()
		behind := false
		ends.Each(func(o kadm.ListedOffset) {
			if d.applied[o.Partition] < o.Offset {
				behind = true
			}
		})
		changed := d.changed
		d.mu.RUnlock()
		if !behind {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("tenancy: sync %s: %w", d.cfg.Topic, ctx.Err())
		}
	}
}

func (d *Directory) run(ctx context.Context) {
	defer close(d.done)
	for {
		fs := d.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			d.cfg.Logger.Warn("fetch config", "topic", topic, "partition", p, "error", err)
		})
		d.mu.Lock()
		fs.EachRecord(d.fold)
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

// fold applies one config record; d.mu is held.
func (d *Directory) fold(rec *kgo.Record) {
	d.applied[rec.Partition] = rec.Offset + 1
	key := string(rec.Key)
	if len(rec.Value) == 0 { // tombstone
		switch {
		case len(key) > 7 && key[:7] == "apikey/":
			delete(d.keys, key[7:])
		case len(key) > 7 && key[:7] == "tenant/":
			delete(d.tenants, key[7:])
		case strings.HasPrefix(key, queueKeyPrefix):
			d.deleteQueue(key)
		case strings.HasPrefix(key, endpointKeyPrefix):
			d.dropEndpoint(key, rec.Offset)
		}
		return
	}
	var cr eventv1.ConfigRecord
	if err := proto.Unmarshal(rec.Value, &cr); err != nil {
		d.cfg.Logger.Error("decode config record", "key", key, "offset", rec.Offset, "error", err)
		return
	}
	switch b := cr.Body.(type) {
	case *eventv1.ConfigRecord_Tenant:
		d.tenants[b.Tenant.Id] = b.Tenant
	case *eventv1.ConfigRecord_ApiKey:
		d.keys[b.ApiKey.Hash] = b.ApiKey
	case *eventv1.ConfigRecord_Queue:
		d.foldQueue(b.Queue)
	case *eventv1.ConfigRecord_Endpoint:
		d.foldEndpoint(b.Endpoint, rec.Offset)
	}
}

// Authenticate resolves an API key to its principal.
func (d *Directory) Authenticate(key string) (Principal, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	k, ok := d.keys[HashKey(key)]
	if !ok {
		return Principal{}, ErrUnknownKey
	}
	if _, ok := d.tenants[k.TenantId]; !ok {
		return Principal{}, ErrUnknownKey
	}
	return Principal{TenantID: k.TenantId, KeyID: k.Id}, nil
}

// Tenant returns a tenant by id.
func (d *Directory) Tenant(id string) (*eventv1.Tenant, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	t, ok := d.tenants[id]
	if !ok {
		return nil, fmt.Errorf("tenant %s: %w", id, ErrUnknownTenant)
	}
	return t, nil
}

// CreateTenant appends a new tenant with a fresh signing secret.
func (d *Directory) CreateTenant(ctx context.Context, name string, now time.Time) (*eventv1.Tenant, error) {
	t := &eventv1.Tenant{
		Id:            "ten_" + eventlog.NewID(),
		Name:          name,
		SigningSecret: NewSigningSecret(),
		CreatedAt:     timestamppb.New(now),
	}
	if err := d.append(ctx, "tenant/"+t.Id, &eventv1.ConfigRecord{Body: &eventv1.ConfigRecord_Tenant{Tenant: t}}, now); err != nil {
		return nil, err
	}
	return t, nil
}

// AddKey registers key for tenantID. The key itself is not stored.
func (d *Directory) AddKey(ctx context.Context, tenantID, key, name string, now time.Time) (*eventv1.APIKey, error) {
	k := &eventv1.APIKey{
		Id:        KeyID(key),
		TenantId:  tenantID,
		Hash:      HashKey(key),
		Name:      name,
		CreatedAt: timestamppb.New(now),
	}
	if err := d.append(ctx, "apikey/"+k.Hash, &eventv1.ConfigRecord{Body: &eventv1.ConfigRecord_ApiKey{ApiKey: k}}, now); err != nil {
		return nil, err
	}
	return k, nil
}

// Bootstrap makes sure key resolves to a tenant: it creates a tenant named
// name and registers the key when the key is unknown. It is idempotent.
func (d *Directory) Bootstrap(ctx context.Context, name, key string, now time.Time) (Principal, error) {
	if p, err := d.Authenticate(key); err == nil {
		return p, nil
	}
	t, err := d.CreateTenant(ctx, name, now)
	if err != nil {
		return Principal{}, err
	}
	if _, err := d.AddKey(ctx, t.Id, key, "bootstrap", now); err != nil {
		return Principal{}, err
	}
	if err := d.Sync(ctx); err != nil {
		return Principal{}, err
	}
	return d.Authenticate(key)
}

func (d *Directory) append(ctx context.Context, key string, cr *eventv1.ConfigRecord, now time.Time) error {
	cr.EventId = eventlog.NewID()
	cr.OccurredAt = timestamppb.New(now)
	if cr.Actor == nil {
		cr.Actor = &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "tenancy"}
	}
	value, err := proto.Marshal(cr)
	if err != nil {
		return fmt.Errorf("encode config record %s: %w", key, err)
	}
	rec := &kgo.Record{Topic: d.cfg.Topic, Key: []byte(key), Value: value}
	if err := d.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("append %s to %s: %w", key, d.cfg.Topic, err)
	}
	return nil
}
