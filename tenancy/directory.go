package tenancy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

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
	f   *eventlog.Follower

	mu      sync.RWMutex
	tenants map[string]*eventv1.Tenant
	keys    map[string]*eventv1.APIKey            // by hash
	queues  map[string]map[string]*sluicev1.Queue // by tenant, then name
	// endpoints is folded in endpoints.go.
	endpoints endpointTable
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
	d := &Directory{
		cfg:     cfg,
		tenants: make(map[string]*eventv1.Tenant),
		keys:    make(map[string]*eventv1.APIKey),
		queues:  make(map[string]map[string]*sluicev1.Queue),
	}
	f, err := eventlog.NewFollower(eventlog.FollowerConfig{
		Brokers: cfg.Brokers, Topic: cfg.Topic, ClientOpts: cfg.ClientOpts, Logger: cfg.Logger,
		Fold: func(rec *kgo.Record) {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.fold(rec)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("tenancy: %w", err)
	}
	d.f = f
	return d, nil
}

// Start folds the topic up to its current end, then keeps folding in the
// background. It returns once the directory is current.
func (d *Directory) Start(ctx context.Context) error {
	if err := d.f.Start(ctx); err != nil {
		return fmt.Errorf("tenancy: %w", err)
	}
	return nil
}

// Stop ends folding and closes the client.
func (d *Directory) Stop(ctx context.Context) error { return d.f.Stop(ctx) }

// Sync waits until everything committed to the topic before the call is
// folded.
func (d *Directory) Sync(ctx context.Context) error {
	if err := d.f.Sync(ctx); err != nil {
		return fmt.Errorf("tenancy: %w", err)
	}
	return nil
}

// fold applies one config record; d.mu is held.
func (d *Directory) fold(rec *kgo.Record) {
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
		case strings.HasPrefix(key, endpointHealthKeyPrefix):
			d.dropEndpointHealth(key, rec.Offset)
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
	case *eventv1.ConfigRecord_EndpointHealth:
		d.foldEndpointHealth(b.EndpointHealth, rec.Offset)
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
	if err := d.f.Append(ctx, key, value); err != nil {
		return fmt.Errorf("tenancy: %w", err)
	}
	return nil
}
