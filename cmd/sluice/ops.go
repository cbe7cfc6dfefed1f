package main

// The node's operations surface: /metrics, /healthz and /readyz, served on
// the API port by api nodes and, when --metrics-addr is set, on a port of
// their own by any node; consumer lag, the read model's lag and the
// dead-letter count read at scrape time.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/projections"
	"github.com/sluicehq/sluice/tenancy"
)

// ops is a node's health and metrics plumbing.
type ops struct {
	n     *node
	adm   *kadm.Client
	store *projections.Store

	mu      sync.Mutex
	started bool
	srv     *http.Server
	done    chan struct{}
}

// startOps creates the node's admin client for health checks and lag,
// registers the scrape-time collectors, and serves the operations routes
// on cfg.MetricsListener when one is set. Roles count as starting until
// markStarted.
func (n *node) startOps(dir *tenancy.Directory, store *projections.Store) error {
	cfg := n.cfg
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.ClientID("sluice-ops")}, cfg.KafkaOpts...)...)
	if err != nil {
		return fmt.Errorf("new admin client: %w", err)
	}
	o := &ops{n: n, adm: kadm.NewClient(cl), store: store}
	n.ops = o
	n.stops = append(n.stops, func(context.Context) error { cl.Close(); return nil })
	n.metrics.registerLag(o.adm, cfg.Topics, lagGroups(cfg), store)
	n.metrics.reg.MustRegister(&deadLetterCollector{
		dir: dir, store: store,
		size: prometheus.NewDesc("sluice_dlq_size", "Dead jobs waiting in the dead-letter queue, all tenants.", nil, nil),
	})
	if cfg.MetricsListener == nil {
		return nil
	}
	mux := http.NewServeMux()
	o.routes(mux)
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	o.done = make(chan struct{})
	go func() {
		defer close(o.done)
		if err := o.srv.Serve(cfg.MetricsListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("serve metrics", "addr", cfg.MetricsListener.Addr().String(), "error", err)
		}
	}()
	n.stops = append(n.stops, func(ctx context.Context) error {
		err := o.srv.Shutdown(ctx)
		<-o.done
		if err != nil {
			return fmt.Errorf("shut down metrics server: %w", err)
		}
		return nil
	})
	return nil
}

// lagGroups are the consumer groups whose lag the node reports: every
// role that commits group offsets. The projections role keeps its
// position in Redis and is reported from there.
func lagGroups(cfg nodeConfig) []string {
	p := cfg.Topics.Prefix
	return []string{p + roleDelivery, p + roleTiers, p + roleRouter, p + "parked", p + "analytics"}
}

// routes adds /metrics, /healthz and /readyz to mux.
func (o *ops) routes(mux *http.ServeMux) {
	mux.Handle("GET /metrics", o.n.metrics.handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := o.ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
}

// markStarted records that every role of the node has started.
func (o *ops) markStarted() {
	o.mu.Lock()
	o.started = true
	o.mu.Unlock()
}

// ready reports whether the node can serve: its roles started, Kafka
// reachable, Redis answering.
func (o *ops) ready(ctx context.Context) error {
	o.mu.Lock()
	started := o.started
	o.mu.Unlock()
	var errs []error
	if !started {
		errs = append(errs, fmt.Errorf("roles starting: %s", rolesString(o.n.cfg.Roles)))
	}
	if _, err := o.adm.ListBrokers(ctx); err != nil {
		errs = append(errs, fmt.Errorf("kafka: %w", err))
	}
	if err := o.n.cfg.Redis.Ping(ctx).Err(); err != nil {
		errs = append(errs, fmt.Errorf("redis: %w", err))
	}
	return errors.Join(errs...)
}

// deadLetterCollector reads the dead-letter count from the read model at
// scrape time.
type deadLetterCollector struct {
	dir   *tenancy.Directory
	store *projections.Store
	size  *prometheus.Desc
}

func (c *deadLetterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.size }

func (c *deadLetterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := c.store.DeadLetterCount(ctx, c.dir.TenantIDs())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.size, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(n))
}

// readModelLag is how far the read model trails the events topic: per
// partition, the last stable offset less the checkpoint. A transaction
// marker after a partition's last record counts as one.
func readModelLag(ctx context.Context, adm *kadm.Client, store *projections.Store, topic string) (int64, error) {
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	var lag int64
	var errs []string
	ends.Each(func(o kadm.ListedOffset) {
		ckpt, ok, err := store.Checkpoint(ctx, topic, o.Partition)
		if err != nil {
			errs = append(errs, err.Error())
			return
		}
		if s, found := starts.Lookup(topic, o.Partition); !ok || (found && ckpt < s.Offset) {
			ckpt = s.Offset
		}
		lag += max(0, o.Offset-ckpt)
	})
	if len(errs) > 0 {
		slices.Sort(errs)
		return lag, errors.New(strings.Join(slices.Compact(errs), "; "))
	}
	return lag, nil
}
