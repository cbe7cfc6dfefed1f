package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/tenancy"
)

// scrape reads base/metrics.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: HTTP %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample returns the value of the series of family name whose labels
// include labels: a counter's or gauge's value, a histogram's count. It
// reports false when there is no such series.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := make(map[string]string)
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// wantSeries is a series and the value it must reach.
type wantSeries struct {
	name   string
	labels map[string]string
	value  float64
}

// waitSeries scrapes until every series reads its value (deliveries are
// counted just after their outcome is written, so a scrape may come a
// moment early).
func waitSeries(t *testing.T, base string, want []wantSeries) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		fams := scrape(t, base)
		var missing []string
		for _, w := range want {
			if got, ok := sample(fams, w.name, w.labels); !ok || got != w.value {
				missing = append(missing, fmt.Sprintf("%s%v: got %v (present %v), want %v", w.name, w.labels, got, ok, w.value))
			}
		}
		if len(missing) == 0 {
			return fams
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics:\n%s", strings.Join(missing, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMetricsAfterJobsRun runs a job that succeeds, one that fails twice
// and then succeeds, and one that dies, and checks the job, endpoint,
// dead-letter and lag series on the API port's /metrics.
func TestMetricsAfterJobsRun(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	recv.setSecret(s.Secret)
	fast := map[string]any{"schedule": []string{"1s"}}
	ids := map[string]string{}
	for _, path := range []string{"/ok", "/fail2", "/gone"} {
		var enq enqueueAnswer
		req := map[string]any{"queue": "metered", "payload": 1, "target": map[string]string{"url": recv.URL + path}, "retryPolicy": fast}
		if status, body := s.call(t, "JobService/Enqueue", req, &enq); status != http.StatusOK {
			t.Fatalf("Enqueue: HTTP %d %s", status, body)
		}
		ids[path] = enq.Job.ID
	}
	waitState(t, s, ids["/ok"], "JOB_STATE_SUCCEEDED", 30*time.Second)
	waitState(t, s, ids["/fail2"], "JOB_STATE_SUCCEEDED", 30*time.Second)
	waitState(t, s, ids["/gone"], "JOB_STATE_DEAD", 30*time.Second)

	host := strings.TrimPrefix(recv.URL, "http://")
	queue := map[string]string{"queue": "metered"}
	fams := waitSeries(t, s.URL, []wantSeries{
		{"sluice_jobs_enqueued_total", queue, 3},
		{"sluice_jobs_succeeded_total", queue, 2},
		{"sluice_jobs_failed_total", queue, 3},
		{"sluice_jobs_dead_lettered_total", queue, 1},
		{"sluice_endpoint_latency_seconds", map[string]string{"endpoint": host}, 5},
		{"sluice_endpoint_attempts_total", map[string]string{"endpoint": host, "outcome": "succeeded"}, 2},
		{"sluice_endpoint_attempts_total", map[string]string{"endpoint": host, "outcome": "retry"}, 2},
		{"sluice_endpoint_attempts_total", map[string]string{"endpoint": host, "outcome": "dead"}, 1},
		{"sluice_dlq_size", nil, 1},
	})
	for _, group := range []string{"sluice.delivery", "sluice.projections"} {
		if _, ok := sample(fams, "sluice_consumer_lag", map[string]string{"group": group, "topic": "sluice.events"}); !ok {
			t.Errorf("sluice_consumer_lag{group=%q}: missing", group)
		}
	}
	if _, ok := sample(fams, "sluice_tier_backlog", map[string]string{"tier": "1s"}); !ok {
		t.Error("sluice_tier_backlog{tier=\"1s\"}: missing")
	}
}

// TestMetricsAddrOnNodesWithoutAPI splits the roles over two serve
// processes and checks that the node without the api role serves
// /metrics, /healthz and /readyz on --metrics-addr, with the series of
// the deliveries it made.
func TestMetricsAddrOnNodesWithoutAPI(t *testing.T) {
	t.Parallel()
	brokers, redisURL := os.Getenv(eventlogtest.EnvBrokers), os.Getenv("SLUICE_TEST_REDIS_URL")
	if brokers == "" || redisURL == "" {
		t.Skipf("REAL KAFKA NOT TESTED: %s and SLUICE_TEST_REDIS_URL must both be set (the README's test command sets them)", eventlogtest.EnvBrokers)
	}
	key := tenancy.NewKey()
	prefix := fmt.Sprintf("metrics%d.", time.Now().UnixNano())
	common := []string{"serve", "--kafka-brokers", brokers, "--redis-url", redisURL, "--redis-prefix", prefix,
		"--topic-prefix", prefix, "--partitions", "2", "--replication-factor", "1", "--allow-loopback-targets"}
	api := startSluice(t, key, append(common, "--roles", "api", "--create-topics", "--bootstrap-api-key", key,
		"--http-addr", "127.0.0.1:0", "--node-id", "api")...)
	worker := startSluice(t, key, append(common, "--roles", "delivery,projections,tiers",
		"--metrics-addr", "127.0.0.1:0", "--node-id", "worker")...)
	if worker.Metrics == "" {
		t.Fatal("serve --metrics-addr printed no metrics line")
	}
	recv := newReceiver(t)
	recv.setSecret(api.Secret)

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := httpClient.Get(worker.Metrics + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s on the metrics port: HTTP %d %s; want 200", path, resp.StatusCode, b)
		}
	}
	var enq enqueueAnswer
	req := map[string]any{"queue": "split", "payload": 1, "target": map[string]string{"url": recv.URL + "/ok"}}
	if status, body := api.call(t, "JobService/Enqueue", req, &enq); status != http.StatusOK {
		t.Fatalf("Enqueue: HTTP %d %s", status, body)
	}
	waitState(t, api, enq.Job.ID, "JOB_STATE_SUCCEEDED", 60*time.Second)
	u, _ := url.Parse(recv.URL)
	fams := waitSeries(t, worker.Metrics, []wantSeries{
		{"sluice_jobs_succeeded_total", map[string]string{"queue": "split"}, 1},
		{"sluice_endpoint_latency_seconds", map[string]string{"endpoint": u.Host}, 1},
	})
	if _, ok := sample(fams, "sluice_consumer_lag", map[string]string{"group": prefix + "delivery"}); !ok {
		t.Error("sluice_consumer_lag of the delivery group: missing on the metrics port")
	}
	waitSeries(t, api.URL, []wantSeries{{"sluice_jobs_enqueued_total", map[string]string{"queue": "split"}, 1}})
}
