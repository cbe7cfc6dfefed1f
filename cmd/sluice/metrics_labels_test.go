package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// discardLog is an api.Appender that accepts everything.
type discardLog struct{}

func (discardLog) Append(context.Context, ...*kgo.Record) error      { return nil }
func (discardLog) AppendAtomic(context.Context, []*kgo.Record) error { return nil }
func (discardLog) AppendEach(_ context.Context, r []*kgo.Record) []error {
	return make([]error, len(r))
}

// Tenants name queues: past maxQueueLabels queues every per-queue series
// counts under "other", and nothing is lost from the totals.
func TestMetricsCapQueueLabels(t *testing.T) {
	m := newMetrics()
	log := meteredLog{Appender: discardLog{}, jobs: m.jobs}
	const queues = maxQueueLabels + 50
	for i := range queues {
		q := fmt.Sprintf("q%03d", i)
		ev := eventlog.NewEvent(eventlog.Meta{TenantID: "t", JobID: fmt.Sprintf("j%d", i), OccurredAt: time.Now()},
			&eventv1.JobEnqueued{Spec: &eventv1.JobSpec{Queue: q, Payload: []byte(`{}`), Target: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: "http://a.example/"}}}})
		rec, err := eventlog.EncodeEvent("sluice.events", ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := log.Append(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		m.Attempted(q, "ep_1", eventv1.Outcome_OUTCOME_RETRY, 1, time.Millisecond)
		m.Attempted(q, "ep_1", eventv1.Outcome_OUTCOME_DEAD, 2, time.Millisecond)
		m.Deferred(q)
	}
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range fams {
		labels := map[string]bool{}
		var total float64
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "queue" {
					labels[l.GetValue()] = true
					total += s.GetCounter().GetValue() + float64(s.GetHistogram().GetSampleCount())
				}
			}
		}
		if len(labels) == 0 {
			continue
		}
		checked++
		if len(labels) != maxQueueLabels+1 || !labels["other"] || !labels["q000"] || labels[fmt.Sprintf("q%03d", queues-1)] {
			t.Errorf("%s: %d queue labels (other: %v); want the first %d queues and other", f.GetName(), len(labels), labels["other"], maxQueueLabels)
		}
		if total == 0 || int(total)%queues != 0 {
			t.Errorf("%s: %v counted; want a multiple of the %d queues' events", f.GetName(), total, queues)
		}
	}
	if checked < 7 {
		t.Errorf("%d families with a queue label; want the 8 per-queue series", checked)
	}
}
