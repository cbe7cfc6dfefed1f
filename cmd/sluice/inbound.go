package main

// Wiring of inbound webhooks: the source catalog, POST /in/{source_id}
// (api role), the router role on sluice.inbox, their metrics and flags.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/api"
	inreceiver "github.com/sluicehq/sluice/inbound/receiver"
	"github.com/sluicehq/sluice/inbound/router"
	"github.com/sluicehq/sluice/inbound/sources"
	"github.com/sluicehq/sluice/log/eventlog"
)

// roleRouter routes the inbox's requests to jobs.
const roleRouter = "router"

// inboundConfig sizes the inbound receiver.
type inboundConfig struct {
	// MaxBodyBytes of an inbound request; 0 = inreceiver.DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// PublicURL prefixes sources' ingest URLs; "" = the API's listen
	// address over http.
	PublicURL string
}

// inboundFlags are the inbound receiver's flags; dev and serve take them.
type inboundFlags struct {
	maxBody   *int64
	publicURL *string
}

func addInboundFlags(fs flagSet) inboundFlags {
	return inboundFlags{
		maxBody: fs.Int64("inbound-max-body-bytes", inreceiver.DefaultMaxBodyBytes,
			fmt.Sprintf("largest inbound webhook body accepted (at most %d)", maxInboundBody)),
		publicURL: fs.String("public-url", "", "base URL providers reach this server at, for sources' ingest URLs; default http://<http-addr>"),
	}
}

// maxInboundBody leaves room in a record for the request's envelope.
const maxInboundBody = eventlog.MaxRecordBytes - 1<<20

func (f inboundFlags) config() (inboundConfig, error) {
	if *f.maxBody <= 0 || *f.maxBody > maxInboundBody {
		return inboundConfig{}, fmt.Errorf("--inbound-max-body-bytes: %d is outside 1..%d", *f.maxBody, maxInboundBody)
	}
	if u := *f.publicURL; u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return inboundConfig{}, fmt.Errorf("--public-url: %q is not an http(s) URL", u)
	}
	return inboundConfig{MaxBodyBytes: *f.maxBody, PublicURL: *f.publicURL}, nil
}

// inboundMetrics meters the receiver and the router.
type inboundMetrics struct {
	requests *prometheus.CounterVec
	accept   *prometheus.HistogramVec
	routed   *prometheus.CounterVec
}

func newInboundMetrics(reg prometheus.Registerer) *inboundMetrics {
	m := &inboundMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_inbound_requests_total",
			Help: "Inbound webhook requests by outcome (accepted, verification_failed, unknown_source, too_large, unavailable, ...) and verification kind.",
		}, []string{"outcome", "kind"}),
		accept: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_inbound_accept_seconds",
			Help:    "Time from an inbound request's arrival to its answer, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"outcome"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_inbound_routed_jobs_total", Help: "Jobs enqueued by routing inbound requests, by verification kind.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.requests, m.accept, m.routed)
	return m
}

// Received implements inreceiver.Observer.
func (m *inboundMetrics) Received(outcome, kind string, _ int, latency time.Duration) {
	m.requests.WithLabelValues(outcome, kind).Inc()
	m.accept.WithLabelValues(outcome).Observe(latency.Seconds())
}

// Routed implements router.Observer.
func (m *inboundMetrics) Routed(kind string, jobs int) {
	m.routed.WithLabelValues(kind).Add(float64(jobs))
}

// inboundParts are a node's inbound pieces; nil when neither the api nor
// the router role runs.
type inboundParts struct {
	catalog *sources.Catalog
	router  *router.Router
	metrics *inboundMetrics
}

// startInbound folds the sources when the api or router role runs, and
// runs the router role on sluice.inbox.
func (n *node) startInbound(ctx context.Context) error {
	cfg := n.cfg
	if !cfg.Roles[roleAPI] && !cfg.Roles[roleRouter] {
		return nil
	}
	cat, err := sources.New(sources.Config{Brokers: cfg.Brokers, Topic: cfg.Topics.Config(), ClientOpts: cfg.KafkaOpts, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	if err := cat.Start(ctx); err != nil {
		_ = cat.Stop(ctx)
		return fmt.Errorf("fold sources: %w", err)
	}
	n.stops = append(n.stops, cat.Stop)
	im := newInboundMetrics(n.metrics.reg)
	r, err := router.New(router.Config{Sources: cat, Topics: cfg.Topics, Observer: im, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	n.inbound = &inboundParts{catalog: cat, router: r, metrics: im}
	if !cfg.Roles[roleRouter] {
		return nil
	}
	runner, err := eventlog.NewRunner(eventlog.RunnerConfig{
		Brokers:         cfg.Brokers,
		Group:           cfg.Topics.Prefix + roleRouter,
		Topics:          []string{cfg.Topics.Inbox()},
		Handler:         r.Handle,
		TransactionalID: cfg.Topics.Prefix + roleRouter + "-" + cfg.NodeID,
		ClientOpts:      staticMember(cfg, n.metrics, roleRouter),
		Logger:          cfg.Logger,
	})
	if err != nil {
		return err
	}
	if err := runner.Start(ctx); err != nil {
		return fmt.Errorf("start router: %w", err)
	}
	n.stops = append(n.stops, runner.Stop)
	return nil
}

// inboundAPI returns the SourceService's settings and the handler of
// POST /in/{source_id}.
func (n *node) inboundAPI(app *eventlog.Appender) (api.SourceConfig, http.Handler, error) {
	cfg := n.cfg
	rc, err := inreceiver.New(inreceiver.Config{
		Sources:      n.inbound.catalog,
		Log:          app,
		Topic:        cfg.Topics.Inbox(),
		MaxBodyBytes: cfg.Inbound.MaxBodyBytes,
		Observer:     n.inbound.metrics,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return api.SourceConfig{}, nil, err
	}
	replayer, err := router.NewReplayer(n.inbound.router, router.ReplayerConfig{
		Brokers: cfg.Brokers, ClientOpts: cfg.KafkaOpts, Log: app,
	})
	if err != nil {
		return api.SourceConfig{}, nil, err
	}
	public := cfg.Inbound.PublicURL
	if public == "" {
		public = "http://" + cfg.Listener.Addr().String()
	}
	return api.SourceConfig{Store: n.inbound.catalog, Replayer: replayer, PublicURL: public}, rc, nil
}
