package eventlog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// DefaultPrefix starts every topic name unless Topics.Prefix says otherwise.
const DefaultPrefix = "sluice."

// MaxRecordBytes is the largest record (batch) Sluice's producers send
// and its keyed topics accept: room for a 25 MiB inbound webhook body and
// its envelope.
const MaxRecordBytes = 32 << 20

// Topics names Sluice's topics. The set is fixed and small: never a topic
// per tenant or per queue.
type Topics struct {
	// Prefix starts every name. Default "sluice.".
	Prefix string
	// Partitions of the keyed topics (events, dlq, inbox). Default 12.
	Partitions int32
	// ReplicationFactor of every topic; -1 uses the broker default.
	// Default -1.
	ReplicationFactor int16
}

// WithDefaults returns t with its zero fields set to their defaults.
func (t Topics) WithDefaults() Topics {
	if t.Prefix == "" {
		t.Prefix = DefaultPrefix
	}
	if t.Partitions == 0 {
		t.Partitions = 12
	}
	if t.ReplicationFactor == 0 {
		t.ReplicationFactor = -1
	}
	return t
}

// Events is the source of truth: every job state transition, keyed by job
// id so one job's history is ordered within one partition.
func (t Topics) Events() string { return t.Prefix + "events" }

// DLQ holds dead-lettered jobs with their attempts.
func (t Topics) DLQ() string { return t.Prefix + "dlq" }

// Inbox holds raw inbound webhook requests, keyed by source id.
func (t Topics) Inbox() string { return t.Prefix + "inbox" }

// Config is compacted: tenants, API keys, queues, endpoints, sources. Every
// node folds it into memory.
func (t Topics) Config() string { return t.Prefix + "config" }

// RetryTiers are the delays of the delay lines, shortest first. Every
// record of one line waits the same time, so arrival order is due order.
var RetryTiers = []time.Duration{
	time.Second, 5 * time.Second, 30 * time.Second,
	2 * time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour,
}

// RetryTopics names every delay line.
func (t Topics) RetryTopics() []string {
	names := make([]string, len(RetryTiers))
	for i, d := range RetryTiers {
		names[i] = t.Retry(d)
	}
	return names
}

// Retry names the delay line for one retry tier.
// Names are short: "sluice.retry.5s", "sluice.retry.2m", "sluice.retry.1h".
func (t Topics) Retry(delay time.Duration) string {
	name := delay.String()
	if strings.HasSuffix(name, "m0s") {
		name = strings.TrimSuffix(name, "0s")
	}
	if strings.HasSuffix(name, "h0m") {
		name = strings.TrimSuffix(name, "0m")
	}
	return t.Prefix + "retry." + name
}

// TopicSpec is a topic to create.
type TopicSpec struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
}

// Specs lists every topic with its configs.
func (t Topics) Specs() []TopicSpec {
	t = t.WithDefaults()
	str := func(s string) *string { return &s }
	keyed := map[string]*string{
		"cleanup.policy": str("delete"),
		"retention.ms":   str(strconv.FormatInt((30 * 24 * time.Hour).Milliseconds(), 10)),
		// Inbound webhook bodies (up to 25 MiB) travel in inbox records
		// and in the jobs routed from them.
		"max.message.bytes": str(strconv.Itoa(MaxRecordBytes)),
	}
	// The events topic is the record of every job: the read model and
	// the audit trail are rebuilt from it, so it is kept for good (size it
	// with the disk, or archive it with tiered storage).
	forever := maps.Clone(keyed)
	forever["retention.ms"] = str("-1")
	specs := []TopicSpec{
		{Name: t.Events(), Partitions: t.Partitions, Configs: forever},
		{Name: t.DLQ(), Partitions: t.Partitions, Configs: keyed},
		{Name: t.Inbox(), Partitions: t.Partitions, Configs: keyed},
		// Compacted: a parked delivery waits as long as its endpoint stays
		// disabled, and its release writes a tombstone.
		{Name: t.Parked(), Partitions: t.Partitions, Configs: map[string]*string{
			"cleanup.policy": str("compact"),
			// A parked delivery holds the whole job.ready, payload included.
			"max.message.bytes": str(strconv.Itoa(MaxRecordBytes)),
		}},
		{Name: t.Config(), Partitions: 1, Configs: map[string]*string{
			"cleanup.policy": str("compact"),
		}},
	}
	for _, name := range t.RetryTopics() {
		specs = append(specs, TopicSpec{Name: name, Partitions: t.Partitions, Configs: keyed})
	}
	return specs
}

// CreateTopics creates every topic of t that does not exist yet and waits
// until the broker's metadata shows all of them (a new topic is not served
// at once). It is idempotent: existing topics are left as they are.
func CreateTopics(ctx context.Context, adm *kadm.Client, t Topics) error {
	t = t.WithDefaults()
	var errs []error
	var names []string
	for _, spec := range t.Specs() {
		names = append(names, spec.Name)
		resp, err := adm.CreateTopic(ctx, spec.Partitions, t.ReplicationFactor, spec.Configs, spec.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create topic %s: %w", spec.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return waitForTopics(ctx, adm, names)
}

// waitForTopics polls the metadata until every topic has its partitions
// with leaders.
func waitForTopics(ctx context.Context, adm *kadm.Client, names []string) error {
	for {
		details, err := adm.ListTopics(ctx, names...)
		if err == nil && details.Error() == nil && len(details) == len(names) {
			ready := true
			details.EachPartition(func(p kadm.PartitionDetail) {
				if p.Err != nil || p.Leader < 0 {
					ready = false
				}
			})
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for topics to be served: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
