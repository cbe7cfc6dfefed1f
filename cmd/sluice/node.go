package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/analytics"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/delivery"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	"github.com/sluicehq/sluice/retrytiers/delayline"
	"github.com/sluicehq/sluice/tenancy"
)

// Roles a node can run.
const (
	roleAPI         = "api"
	roleDelivery    = "delivery"
	roleProjections = "projections"
	roleTiers       = "tiers"
	// roleRouter is in inbound.go.
)

var knownRoles = []string{roleAPI, roleDelivery, roleProjections, roleTiers, roleRouter, roleAnalytics}

func parseRoles(s string) (map[string]bool, error) {
	roles := make(map[string]bool)
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if !slices.Contains(knownRoles, r) {
			return nil, fmt.Errorf("--roles: unknown role %q (known: %s)", r, strings.Join(knownRoles, ", "))
		}
		roles[r] = true
	}
	if len(roles) == 0 {
		return nil, fmt.Errorf("--roles: at least one of %s", strings.Join(knownRoles, ", "))
	}
	return roles, nil
}

// nodeConfig is everything a node needs, from flags or dev defaults.
type nodeConfig struct {
	Brokers   []string
	KafkaOpts []kgo.Opt
	Redis     redis.UniversalClient
	Topics    eventlog.Topics
	Roles     map[string]bool
	// Listener serves the API when the api role runs.
	Listener net.Listener
	// MetricsListener, when set, serves /metrics, /healthz and /readyz on
	// a port of their own, whatever the roles (ops.go).
	MetricsListener net.Listener
	// RedisPrefix starts every key of the read model; "" =
	// projections.DefaultPrefix.
	RedisPrefix string
	// NodeID makes transactional ids stable across restarts of this node.
	NodeID string
	Guard  delivery.Guard
	Limits api.Limits
	// DeliveryConcurrency is the in-flight deliveries per partition.
	DeliveryConcurrency int
	// IdempotencyWindow is how long an idempotency key names its job;
	// zero means api.DefaultIdempotencyWindow.
	IdempotencyWindow time.Duration
	// Protection guards each endpoint (breaker, auto-disable).
	Protection delivery.ProtectionConfig
	// DrainRate paces the release of a re-enabled endpoint's parked
	// messages, per node and endpoint; 0 = the default.
	DrainRate float64
	// Inbound sizes the inbound webhook receiver.
	Inbound inboundConfig
	// ClickHouse holds the audit trail (analytics role; the API reads
	// it); zero DSN = none.
	ClickHouse analytics.DBConfig
	Logger     *slog.Logger
}

// node runs the roles of one process.
type node struct {
	cfg     nodeConfig
	metrics *metrics
	stops   []func(context.Context) error // in start order
	srv     *http.Server
	serve   chan error
	inbound *inboundParts // inbound.go
	ops     *ops          // ops.go
}

// startNode starts the configured roles in dependency order: the tenant
// directory, the log appender, projections, delivery, then the API.
func startNode(ctx context.Context, cfg nodeConfig) (n *node, err error) {
	m := newMetrics()
	n = &node{cfg: cfg, metrics: m, serve: make(chan error, 1)}
	started := n // the error returns below set n to nil
	defer func() {
		if err != nil {
			started.stop(context.Background())
		}
	}()
	log := cfg.Logger

	dir, err := tenancy.NewDirectory(tenancy.Config{Brokers: cfg.Brokers, Topic: cfg.Topics.Config(), ClientOpts: cfg.KafkaOpts, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := dir.Start(ctx); err != nil {
		_ = dir.Stop(ctx)
		return nil, fmt.Errorf("fold tenants: %w", err)
	}
	n.stops = append(n.stops, dir.Stop)
	if err := n.startInbound(ctx); err != nil {
		return nil, err
	}

	store := projections.NewStore(cfg.Redis, projections.StoreConfig{Prefix: cfg.RedisPrefix, Logger: log})
	if err := n.startOps(dir, store); err != nil {
		return nil, err
	}
	if cfg.Roles[roleProjections] {
		proj, err := projections.NewProjector(store, projections.Config{
			Brokers: cfg.Brokers, Topic: cfg.Topics.Events(), Group: cfg.Topics.Prefix + "projections",
			ClientOpts: staticMember(cfg, m, "projections"), Logger: log,
		})
		if err != nil {
			return nil, err
		}
		if err := proj.Start(ctx); err != nil {
			return nil, fmt.Errorf("start projections: %w", err)
		}
		n.stops = append(n.stops, proj.Stop)
	}

	if cfg.Roles[roleDelivery] {
		d, err := delivery.New(delivery.Config{
			Topics:     cfg.Topics,
			Secrets:    tenantSecrets{dir},
			States:     jobRuns{store},
			Queues:     dir,
			Guard:      cfg.Guard,
			Endpoints:  endpointSource{dir},
			Protection: cfg.Protection,
			MaxPerHost: perHostShare(cfg.DeliveryConcurrency),
			Observer:   m,
			Logger:     log,
		})
		if err != nil {
			return nil, err
		}
		runner, err := eventlog.NewRunner(eventlog.RunnerConfig{
			Brokers:         cfg.Brokers,
			Group:           cfg.Topics.Prefix + "delivery",
			Topics:          []string{cfg.Topics.Events()},
			Handler:         d.Handle,
			Priority:        eventlog.RecordPriority,
			TransactionalID: cfg.Topics.Prefix + "delivery-" + cfg.NodeID,
			MaxInFlight:     cfg.DeliveryConcurrency,
			ClientOpts:      staticMember(cfg, m, "delivery"),
			Logger:          log,
		})
		if err != nil {
			return nil, err
		}
		if err := runner.Start(ctx); err != nil {
			return nil, fmt.Errorf("start delivery: %w", err)
		}
		n.stops = append(n.stops, func(ctx context.Context) error {
			err := runner.Stop(ctx)
			d.Close()
			return err
		})
		stopReleaser, err := startReleaser(ctx, cfg, m, dir)
		if err != nil {
			return nil, err
		}
		n.stops = append(n.stops, stopReleaser)
	}

	if cfg.Roles[roleTiers] {
		line, err := delayline.New(delayline.Config{
			Brokers:         cfg.Brokers,
			Topics:          cfg.Topics,
			TransactionalID: cfg.Topics.Prefix + "tiers-" + cfg.NodeID,
			ClientOpts:      staticMember(cfg, m, "tiers"),
			Observer:        m,
			Logger:          log,
		})
		if err != nil {
			return nil, err
		}
		if err := line.Start(ctx); err != nil {
			return nil, fmt.Errorf("start tiers: %w", err)
		}
		n.stops = append(n.stops, line.Stop)
	}

	if err := n.startAnalytics(ctx); err != nil {
		return nil, err
	}

	if cfg.Roles[roleAPI] {
		if err := n.startAPI(dir, store); err != nil {
			return nil, err
		}
	}
	n.ops.markStarted()
	return n, nil
}

func (n *node) startAPI(dir *tenancy.Directory, store *projections.Store) error {
	cfg := n.cfg
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{
		Brokers:         cfg.Brokers,
		TransactionalID: cfg.Topics.Prefix + "api-" + cfg.NodeID,
		ClientOpts:      cfg.KafkaOpts,
		Logger:          cfg.Logger,
	})
	if err != nil {
		return err
	}
	n.stops = append(n.stops, func(context.Context) error { app.Close(); return nil })
	sourceCfg, inboundHandler, err := n.inboundAPI(app)
	if err != nil {
		return err
	}
	audit, err := n.auditConfig(store)
	if err != nil {
		return err
	}
	apiCfg := api.Config{
		Audit:             audit,
		Queues:            dir,
		QueueStats:        store,
		Workers:           store,
		IdempotencyWindow: cfg.IdempotencyWindow,
		Sources:           sourceCfg,
		Auth:              dir,
		Endpoints:         dir,
		Log:               meteredLog{app, n.metrics.jobs},
		Jobs:              store,
		Topics:            cfg.Topics,
		Limits:            cfg.Limits,
		Ready:             n.ops.ready,
		DeadLetters:       store,
		Logger:            cfg.Logger,
	}
	h, err := api.NewHandler(apiCfg)
	if err != nil {
		return err
	}
	reaper, err := api.NewLeaseReaper(apiCfg, dir.TenantIDs)
	if err != nil {
		return err
	}
	reaper.Start()
	n.stops = append(n.stops, reaper.Stop)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.metrics.handler())
	mux.Handle("/", h)
	mux.Handle("POST /in/{source_id}", inboundHandler)
	n.srv = api.NewServer(mux)
	go func() { n.serve <- n.srv.Serve(cfg.Listener) }()
	n.stops = append(n.stops, func(ctx context.Context) error {
		if err := n.srv.Shutdown(ctx); err != nil {
			return fmt.Errorf("shut down http server: %w", err)
		}
		return nil
	})
	return nil
}

// wait blocks until ctx ends or the HTTP server fails.
func (n *node) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-n.serve:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve http: %w", err)
	}
}

// stop stops the roles in reverse start order: the API stops taking
// requests first, delivery drains, projections and tenants last.
func (n *node) stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var errs []error
	for i := len(n.stops) - 1; i >= 0; i-- {
		if err := n.stops[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	n.stops = nil
	return errors.Join(errs...)
}

// perHostShare is how many of a partition's delivery slots one target may
// hold: all but an eighth (at least 16), which stay free for other targets
// while one is slow or hanging.
func perHostShare(concurrency int) int {
	return max(1, concurrency-max(16, concurrency/8))
}

// staticMember makes this node a static member of a role's consumer group
// (KIP-345): a restarted node takes its partitions back at once instead of
// waiting for the old member's session to time out. The role's client is
// metered.
func staticMember(cfg nodeConfig, m *metrics, role string) []kgo.Opt {
	return append(slices.Clip(cfg.KafkaOpts),
		kgo.ClientID("sluice-"+role),
		m.kafkaHooks(role),
		kgo.InstanceID(cfg.Topics.Prefix+role+"-"+cfg.NodeID),
		kgo.SessionTimeout(15*time.Second),
	)
}

// jobRuns gives delivery where jobs stand in the read model.
type jobRuns struct{ store *projections.Store }

func (j jobRuns) JobRuns(ctx context.Context, tenantID string, jobIDs []string) (map[string]delivery.JobRun, error) {
	runs, err := j.store.JobRuns(ctx, tenantID, jobIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]delivery.JobRun, len(runs))
	for id, r := range runs {
		out[id] = delivery.JobRun{State: r.State, BudgetStart: r.BudgetStart, EnqueueEventID: r.EnqueueEventID,
			CreatedAt: r.CreatedAt, Attempt: r.Attempt, Purged: r.Purged}
	}
	return out, nil
}

// tenantSecrets gives delivery the tenants' signing secrets.
type tenantSecrets struct{ dir *tenancy.Directory }

func (s tenantSecrets) SigningSecret(tenantID string) (string, error) {
	t, err := s.dir.Tenant(tenantID)
	if err != nil {
		return "", err
	}
	return t.SigningSecret, nil
}

func rolesString(roles map[string]bool) string {
	var rs []string
	for r := range roles {
		rs = append(rs, r)
	}
	sort.Strings(rs)
	return strings.Join(rs, ",")
}
