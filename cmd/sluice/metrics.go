package main

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// metrics is the node's Prometheus registry: franz-go's client metrics
// (kprom), the delivery and delay-line observers, and consumer lag read
// from Kafka at scrape time.
type metrics struct {
	reg *prometheus.Registry

	attempts *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	retries  *prometheus.CounterVec
	dead     *prometheus.CounterVec
	deferred *prometheus.CounterVec
	jobs     *jobMetrics // jobmetrics.go

	mu    sync.Mutex
	heads map[string]map[int32]time.Time // delay line -> partition -> head timer's append time
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &metrics{
		reg: reg,
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_delivery_attempts_total", Help: "Delivery attempts by queue and outcome (succeeded, retry, dead).",
		}, []string{"queue", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_delivery_latency_seconds", Help: "Time from sending a delivery to its answer, by queue.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"queue"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_jobs_retries_total", Help: "Failed attempts that scheduled another, by queue.",
		}, []string{"queue"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_jobs_dead_lettered_total", Help: "Jobs dead-lettered, by queue.",
		}, []string{"queue"}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_delivery_deferred_total", Help: "Attempts put back because their target's share of slots was full, by queue.",
		}, []string{"queue"}),
		heads: make(map[string]map[int32]time.Time),
	}
	reg.MustRegister(m.attempts, m.latency, m.retries, m.dead, m.deferred)
	m.jobs = newJobMetrics(reg)
	return m
}

// kafkaHooks meters one Kafka client, labelled with its role. franz-go's
// kprom keeps one set of collectors per client, so each client gets its
// own.
func (m *metrics) kafkaHooks(role string) kgo.Opt {
	return kgo.WithHooks(kprom.NewMetrics("sluice_kafka",
		kprom.Registerer(m.reg), kprom.Gatherer(m.reg),
		kprom.WithStaticLabel(prometheus.Labels{"role": role})))
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Attempted implements delivery.Observer.
func (m *metrics) Attempted(queue, endpoint string, outcome eventv1.Outcome, _ int, latency time.Duration) {
	queue = m.jobs.queueLabel(queue) // tenants name queues: capped
	m.jobs.attempted(queue, endpoint, outcomeName(outcome), latency)
	var name string
	switch outcome {
	case eventv1.Outcome_OUTCOME_SUCCEEDED:
		name = "succeeded"
	case eventv1.Outcome_OUTCOME_RETRY:
		name = "retry"
		m.retries.WithLabelValues(queue).Inc()
	case eventv1.Outcome_OUTCOME_DEAD:
		name = "dead"
		m.dead.WithLabelValues(queue).Inc()
	default:
		name = "unknown"
	}
	m.attempts.WithLabelValues(queue, name).Inc()
	m.latency.WithLabelValues(queue).Observe(latency.Seconds())
}

// Deferred implements delivery.Observer.
func (m *metrics) Deferred(queue string) { m.deferred.WithLabelValues(m.jobs.queueLabel(queue)).Inc() }

// Waiting implements delayline.Observer.
func (m *metrics) Waiting(topic string, partition int32, appended time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.heads[topic] == nil {
		m.heads[topic] = make(map[int32]time.Time)
	}
	m.heads[topic][partition] = appended
}

// Released implements delayline.Observer.
func (m *metrics) Released(topic string, partition int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.heads[topic], partition)
}

// lagCollector reads the roles' consumer lag and the delay lines' backlog
// from Kafka when Prometheus scrapes.
type lagCollector struct {
	m      *metrics
	adm    *kadm.Client
	topics eventlog.Topics
	groups []string
	store  *projections.Store // the projections role's checkpoints; ops.go

	lag, backlog, oldest *prometheus.Desc
}

func (m *metrics) registerLag(adm *kadm.Client, topics eventlog.Topics, groups []string, store *projections.Store) {
	m.reg.MustRegister(&lagCollector{
		m: m, adm: adm, topics: topics, groups: groups, store: store,
		lag:     prometheus.NewDesc("sluice_consumer_lag", "Records not yet consumed, by consumer group (role) and topic.", []string{"group", "topic"}, nil),
		backlog: prometheus.NewDesc("sluice_tier_backlog", "Timers waiting in each delay line.", []string{"tier"}, nil),
		oldest:  prometheus.NewDesc("sluice_tier_oldest_age_seconds", "Age of the oldest timer waiting at the head of a delay line on this node.", []string{"tier"}, nil),
	})
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.backlog
	ch <- c.oldest
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tiers := make(map[string]string) // topic -> tier name
	for _, d := range eventlog.RetryTiers {
		tiers[c.topics.Retry(d)] = c.topics.Retry(d)[len(c.topics.Prefix+"retry."):]
	}
	if lags, err := c.adm.Lag(ctx, c.groups...); err == nil {
		lags.Each(func(l kadm.DescribedGroupLag) {
			for topic, ps := range l.Lag {
				var sum int64
				for _, p := range ps {
					if p.Lag > 0 {
						sum += p.Lag
					}
				}
				ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(sum), l.Group, topic)
				if tier, ok := tiers[topic]; ok {
					ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(sum), tier)
				}
			}
		})
	}
	if lag, err := readModelLag(ctx, c.adm, c.store, c.topics.Events()); err == nil {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(lag), c.topics.Prefix+roleProjections, c.topics.Events())
	}
	now := time.Now()
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for topic, tier := range tiers {
		var oldest time.Duration
		for _, at := range c.m.heads[topic] {
			oldest = max(oldest, now.Sub(at))
		}
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, oldest.Seconds(), tier)
	}
}
