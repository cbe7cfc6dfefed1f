package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/analytics"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/projections"
)

// roleAnalytics copies the events topic into ClickHouse.
const roleAnalytics = "analytics"

// clickHouseFlags name the ClickHouse of the audit trail.
type clickHouseFlags struct {
	dsn      *string
	database *string
}

func addClickHouseFlags(fs flagSet) clickHouseFlags {
	return clickHouseFlags{
		dsn:      fs.String("clickhouse-dsn", "", "ClickHouse of the audit trail, e.g. clickhouse://host:9000 (analytics role; the API reads timelines from it); empty = none"),
		database: fs.String("clickhouse-database", analytics.DefaultDatabase, "ClickHouse database of the audit trail (created when missing)"),
	}
}

// config returns the flags as a DBConfig; the zero DBConfig when no DSN
// is set.
func (f clickHouseFlags) config() (analytics.DBConfig, error) {
	if *f.dsn == "" {
		return analytics.DBConfig{}, nil
	}
	c := analytics.DBConfig{DSN: *f.dsn, Database: *f.database}.WithDefaults()
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("--clickhouse-dsn/--clickhouse-database: %w", err)
	}
	return c, nil
}

// startAnalytics starts the analytics role when the node runs it. A
// ClickHouse that is down does not stop the node: the sink retries.
func (n *node) startAnalytics(ctx context.Context) error {
	cfg := n.cfg
	if !cfg.Roles[roleAnalytics] {
		return nil
	}
	if cfg.ClickHouse.DSN == "" {
		return fmt.Errorf("--roles=%s needs --clickhouse-dsn", roleAnalytics)
	}
	sink, err := analytics.NewSink(analytics.SinkConfig{
		DB:         cfg.ClickHouse,
		Brokers:    cfg.Brokers,
		Topic:      cfg.Topics.Events(),
		Group:      cfg.Topics.Prefix + roleAnalytics,
		ClientOpts: staticMember(cfg, n.metrics, roleAnalytics),
		Observer:   newSinkMetrics(n.metrics.reg),
		Logger:     cfg.Logger,
	})
	if err != nil {
		return err
	}
	if err := sink.Start(ctx); err != nil {
		return fmt.Errorf("start analytics: %w", err)
	}
	n.stops = append(n.stops, sink.Stop)
	return nil
}

// auditConfig is what the API's audit and replay services read: the read
// model, and ClickHouse when the node has a DSN.
func (n *node) auditConfig(store *projections.Store) (api.AuditConfig, error) {
	audit := api.AuditConfig{Timelines: store, Replays: store}
	if n.cfg.ClickHouse.DSN == "" {
		return audit, nil
	}
	conn, err := analytics.Open(n.cfg.ClickHouse)
	if err != nil {
		return audit, err
	}
	n.stops = append(n.stops, func(context.Context) error { return conn.Close() })
	audit.Trail = analytics.NewReader(conn, n.cfg.ClickHouse.Database)
	return audit, nil
}

// sinkMetrics meters the analytics sink's flushes. Its consumer lag is
// sluice_consumer_lag{group="<prefix>analytics"}.
type sinkMetrics struct {
	records  prometheus.Counter
	failures prometheus.Counter
	took     prometheus.Histogram
}

func newSinkMetrics(reg prometheus.Registerer) *sinkMetrics {
	m := &sinkMetrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_analytics_records_total", Help: "Event records copied into ClickHouse.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_analytics_flush_failures_total", Help: "Failed tries to write to ClickHouse (batches, migrations at start).",
		}),
		took: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_analytics_flush_seconds", Help: "Time to write one batch into ClickHouse.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	reg.MustRegister(m.records, m.failures, m.took)
	return m
}

// Flushed implements analytics.Observer.
func (m *sinkMetrics) Flushed(records int, took time.Duration) {
	m.records.Add(float64(records))
	m.took.Observe(took.Seconds())
}

// FlushFailed implements analytics.Observer.
func (m *sinkMetrics) FlushFailed(error) { m.failures.Inc() }
