package eventlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
)

func TestCreateTopicsIsIdempotent(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		adm := c.Admin(t)
		// The cluster created them once already.
		if err := eventlog.CreateTopics(ctx, adm, c.Topics); err != nil {
			t.Fatalf("second CreateTopics: %v", err)
		}
		// A broker's metadata can lag its topic creation by a moment.
		var details kadm.TopicDetails
		for {
			var err error
			if details, err = adm.ListTopics(ctx); err != nil {
				t.Fatal(err)
			}
			missing := false
			for _, spec := range c.Topics.Specs() {
				if _, ok := details[spec.Name]; !ok {
					missing = true
				}
			}
			if !missing || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, spec := range c.Topics.Specs() {
			d, ok := details[spec.Name]
			if !ok {
				t.Errorf("topic %s missing", spec.Name)
				continue
			}
			if got := int32(len(d.Partitions)); got != spec.Partitions {
				t.Errorf("topic %s: %d partitions, want %d", spec.Name, got, spec.Partitions)
			}
		}
		cfgs, err := adm.DescribeTopicConfigs(ctx, c.Topics.Config())
		if err != nil {
			t.Fatal(err)
		}
		rc, err := cfgs.On(c.Topics.Config(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range rc.Configs {
			if kv.Key == "cleanup.policy" && kv.MaybeValue() != "compact" {
				t.Errorf("config topic cleanup.policy: got %s, want compact", kv.MaybeValue())
			}
		}
	})
}

func TestRetryTopicNames(t *testing.T) {
	t.Parallel()
	topics := eventlog.Topics{}.WithDefaults()
	want := []string{"sluice.retry.1s", "sluice.retry.5s", "sluice.retry.30s", "sluice.retry.2m",
		"sluice.retry.10m", "sluice.retry.1h", "sluice.retry.6h"}
	got := topics.RetryTopics()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("tier %d: got %s, want %s", i, got[i], want[i])
		}
	}
	if got := topics.Retry(90 * time.Second); got != "sluice.retry.1m30s" {
		t.Errorf("90s tier: got %s, want sluice.retry.1m30s", got)
	}
}
