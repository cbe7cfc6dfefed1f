// Package eventlogtest provides Kafka clusters for tests: franz-go's
// in-process kfake broker, and a real broker named by the environment.
package eventlogtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
)

// EnvBrokers names the environment variable with a real broker's address
// list (comma-separated). The project's test command sets it.
const EnvBrokers = "SLUICE_TEST_KAFKA_BROKERS"

// Cluster is a Kafka cluster a test uses, with its own topic prefix so
// tests sharing a real broker never see each other's records.
type Cluster struct {
	// Name is "kfake" or "kafka".
	Name    string
	Brokers []string
	Topics  eventlog.Topics
}

// Admin returns an admin client for the cluster, closed at test end.
func (c *Cluster) Admin(t testing.TB) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// Group returns a consumer group name unique to this cluster's test.
func (c *Cluster) Group(role string) string { return c.Topics.Prefix + role }

// NewKfake starts an in-process kfake broker for t and creates the
// topics.
func NewKfake(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	kc, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(kc.Close)
	c := &Cluster{Name: "kfake", Brokers: kc.ListenAddrs(), Topics: topicsFor(t, 4)}
	c.createTopics(t)
	return c
}

// NewReal returns the real broker from SLUICE_TEST_KAFKA_BROKERS with fresh
// topics for t, or skips t, saying loudly why, when the variable is unset.
func NewReal(t testing.TB) *Cluster {
	t.Helper()
	env := os.Getenv(EnvBrokers)
	if env == "" {
		t.Skipf("REAL KAFKA NOT TESTED: %s is unset (the README's test command starts a broker and sets it)", EnvBrokers)
	}
	c := &Cluster{Name: "kafka", Brokers: strings.Split(env, ","), Topics: topicsFor(t, 4)}
	// Registered before the topics exist, so it runs after every cleanup
	// the test adds (clients that use them close first).
	t.Cleanup(func() { c.deleteTopics(t) })
	c.createTopics(t)
	return c
}

// deleteTopics removes the test's topics from the shared broker, best
// effort: a long-lived broker would otherwise gather thousands of
// partitions (and their open files) over many runs.
func (c *Cluster) deleteTopics(t testing.TB) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var names []string
	for _, spec := range c.Topics.Specs() {
		names = append(names, spec.Name)
	}
	if _, err := kadm.NewClient(cl).DeleteTopics(ctx, names...); err != nil {
		t.Logf("delete test topics: %v", err)
	}
}

// Run runs fn as subtests against kfake and against the real broker: one
// conformance suite for both.
func Run(t *testing.T, fn func(t *testing.T, c *Cluster)) {
	t.Helper()
	t.Run("kfake", func(t *testing.T) { fn(t, NewKfake(t)) })
	t.Run("kafka", func(t *testing.T) { fn(t, NewReal(t)) })
}

var seq atomic.Int64

func topicsFor(t testing.TB, partitions int32) eventlog.Topics {
	n := seq.Add(1)
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	return eventlog.Topics{
		Prefix:            fmt.Sprintf("t%x-%d.%s.", time.Now().UnixNano()/1e6, n, name),
		Partitions:        partitions,
		ReplicationFactor: 1,
	}.WithDefaults()
}

func (c *Cluster) createTopics(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := eventlog.CreateTopics(ctx, c.Admin(t), c.Topics); err != nil {
		t.Fatalf("create topics on %s: %v", c.Name, err)
	}
}
