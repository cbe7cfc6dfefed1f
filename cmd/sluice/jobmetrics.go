package main

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// maxEndpointLabels is how many distinct endpoints the per-endpoint series
// name; attempts to further endpoints are counted under "other", so a
// stream of jobs to ever new hosts cannot grow the registry without bound.
const maxEndpointLabels = 200

// maxQueueLabels is how many distinct queues the per-queue series name;
// further queues (any tenant may name any queue) count under "other".
const maxQueueLabels = 200

// otherEndpoint labels the endpoints beyond maxEndpointLabels and the
// queues beyond maxQueueLabels.
const otherEndpoint = "other"

// jobMetrics count jobs by queue and attempts by endpoint.
type jobMetrics struct {
	enqueued  *prometheus.CounterVec
	succeeded *prometheus.CounterVec
	failed    *prometheus.CounterVec

	endpointAttempts *prometheus.CounterVec
	endpointLatency  *prometheus.HistogramVec
	endpoints        labelCap
	// queues caps the queue label of every per-queue series, these and
	// metrics.go's.
	queues labelCap
}

func newJobMetrics(reg prometheus.Registerer) *jobMetrics {
	j := &jobMetrics{
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_jobs_enqueued_total", Help: "Jobs enqueued (job.enqueued events appended by this node), by queue (\"other\" past 200).",
		}, []string{"queue"}),
		succeeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_jobs_succeeded_total", Help: "Jobs whose delivery succeeded, by queue (\"other\" past 200).",
		}, []string{"queue"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_jobs_failed_total", Help: "Failed delivery attempts (retried or dead-lettered), by queue (\"other\" past 200).",
		}, []string{"queue"}),
		endpointAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_endpoint_attempts_total",
			Help: "Delivery attempts by endpoint (endpoint id, else the target's host; \"other\" past 200) and outcome (succeeded, retry, dead).",
		}, []string{"endpoint", "outcome"}),
		endpointLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_endpoint_latency_seconds",
			Help:    "Time from sending a delivery to its answer, by endpoint (endpoint id, else the target's host; \"other\" past 200).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"endpoint"}),
		endpoints: labelCap{max: maxEndpointLabels},
		queues:    labelCap{max: maxQueueLabels},
	}
	reg.MustRegister(j.enqueued, j.succeeded, j.failed, j.endpointAttempts, j.endpointLatency)
	return j
}

// attempted counts one finished delivery attempt; queue is a capped
// label (queueLabel).
func (j *jobMetrics) attempted(queue, endpoint, outcome string, latency time.Duration) {
	switch outcome {
	case "succeeded":
		j.succeeded.WithLabelValues(queue).Inc()
	case "retry", "dead":
		j.failed.WithLabelValues(queue).Inc()
	}
	endpoint = j.endpoints.label(endpoint)
	j.endpointAttempts.WithLabelValues(endpoint, outcome).Inc()
	j.endpointLatency.WithLabelValues(endpoint).Observe(latency.Seconds())
}

// queueLabel is the label of queue in the per-queue series: the queue,
// or "other" past the first maxQueueLabels queues.
func (j *jobMetrics) queueLabel(queue string) string { return j.queues.label(queue) }

// labelCap admits the first max distinct values of a label and maps every
// later one to otherEndpoint.
type labelCap struct {
	max  int
	mu   sync.Mutex
	seen map[string]struct{}
}

func (c *labelCap) label(v string) string {
	if v == "" {
		v = "unknown"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[v]; ok {
		return v
	}
	if len(c.seen) >= c.max {
		return otherEndpoint
	}
	if c.seen == nil {
		c.seen = make(map[string]struct{})
	}
	c.seen[v] = struct{}{}
	return v
}

// meteredLog counts the job.enqueued events it appends, by queue, once
// the log acknowledged them.
type meteredLog struct {
	api.Appender
	jobs *jobMetrics
}

// Append implements api.Appender.
func (l meteredLog) Append(ctx context.Context, recs ...*kgo.Record) error {
	if err := l.Appender.Append(ctx, recs...); err != nil {
		return err
	}
	l.count(recs)
	return nil
}

// AppendAtomic implements api.Appender.
func (l meteredLog) AppendAtomic(ctx context.Context, recs []*kgo.Record) error {
	if err := l.Appender.AppendAtomic(ctx, recs); err != nil {
		return err
	}
	l.count(recs)
	return nil
}

func (l meteredLog) count(recs []*kgo.Record) {
	for _, rec := range recs {
		if eventlog.RecordType(rec) != eventlog.TypeJobEnqueued {
			continue
		}
		ev, err := eventlog.DecodeEvent(rec)
		if err != nil {
			continue
		}
		l.jobs.enqueued.WithLabelValues(l.jobs.queueLabel(ev.GetJobEnqueued().GetSpec().GetQueue())).Inc()
	}
}

// outcomeName is how an attempt's outcome reads in labels.
func outcomeName(o eventv1.Outcome) string {
	switch o {
	case eventv1.Outcome_OUTCOME_SUCCEEDED:
		return "succeeded"
	case eventv1.Outcome_OUTCOME_RETRY:
		return "retry"
	case eventv1.Outcome_OUTCOME_DEAD:
		return "dead"
	}
	return "unknown"
}
