package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// timelineJSON is a GetJobTimeline answer.
type timelineJSON struct {
	Source string `json:"source"`
	Events []struct {
		Type       string `json:"type"`
		At         string `json:"at"`
		Attempt    int    `json:"attempt"`
		StatusCode int    `json:"statusCode"`
		Latency    string `json:"latency"`
		Outcome    string `json:"outcome"`
		Actor      string `json:"actor"`
		Error      string `json:"error"`
	} `json:"events"`
}

// failedTwice enqueues a job to /fail2 and waits until it succeeded.
func failedTwice(t *testing.T, s *server, recv *receiver) string {
	t.Helper()
	var enq enqueueAnswer
	if status, body := s.call(t, "JobService/Enqueue", map[string]any{
		"queue": "audited", "payload": map[string]int{"n": 1}, "target": map[string]string{"url": recv.URL + "/fail2"},
		"retryPolicy": map[string]any{"schedule": []string{"1s"}},
	}, &enq); status != http.StatusOK {
		t.Fatalf("Enqueue: HTTP %d %s", status, body)
	}
	waitState(t, s, enq.Job.ID, "JOB_STATE_SUCCEEDED", 30*time.Second)
	return enq.Job.ID
}

// checkFailedTwice checks the timeline of a job that failed twice and
// then succeeded: enqueue, three attempts with their status codes and
// latencies, success, in order, both in `sluice audit` and its --json.
func checkFailedTwice(t *testing.T, s *server, id, wantSource string) {
	t.Helper()
	var tl timelineJSON
	if err := json.Unmarshal([]byte(s.cliOK(t, "audit", id, "--json")), &tl); err != nil {
		t.Fatalf("audit --json: %v", err)
	}
	if tl.Source != wantSource {
		t.Errorf("source: got %q, want %q", tl.Source, wantSource)
	}
	var got []string
	for _, e := range tl.Events {
		switch e.Type {
		case "job.enqueued":
			got = append(got, e.Type)
		case "job.attempted":
			if e.Latency == "" {
				t.Errorf("attempt %d has no latency", e.Attempt)
			}
			got = append(got, fmt.Sprintf("%s#%d:%d:%s", e.Type, e.Attempt, e.StatusCode, e.Outcome))
		}
	}
	want := []string{"job.enqueued", "job.attempted#1:503:retry", "job.attempted#2:503:retry", "job.attempted#3:204:succeeded"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("timeline from %s: got %q, want %q", tl.Source, got, want)
	}
	for i := 1; i < len(tl.Events); i++ {
		if tl.Events[i].At < tl.Events[i-1].At {
			t.Errorf("event %d (%s at %s) is before event %d (%s)", i, tl.Events[i].Type, tl.Events[i].At, i-1, tl.Events[i-1].At)
		}
	}

	table := s.cliOK(t, "audit", id)
	t.Logf("sluice audit %s:\n%s", id, table)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	var rows []string
	for _, l := range lines[2:] { // title, header
		f := strings.Fields(l)
		if len(f) >= 4 && (f[3] == "job.enqueued" || f[3] == "job.attempted") {
			rows = append(rows, strings.Join(f[3:], " "))
		}
	}
	if len(rows) != 4 || !strings.HasPrefix(rows[1], "job.attempted 1 503 ") || !strings.Contains(rows[1], " retry ") ||
		!strings.HasPrefix(rows[3], "job.attempted 3 204 ") || !strings.Contains(rows[3], " succeeded") {
		t.Errorf("audit table rows %q, want enqueue, then attempts 1 and 2 with 503/retry and 3 with 204/succeeded:\n%s", rows, table)
	}
	if !strings.Contains(lines[0], "(from "+wantSource+")") {
		t.Errorf("audit title %q does not name the source %s", lines[0], wantSource)
	}
}

func TestAuditTimelineFromProjection(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	id := failedTwice(t, s, recv)
	checkFailedTwice(t, s, id, "projection")

	t.Run("unknown job is not found", func(t *testing.T) {
		status, body := s.call(t, "AuditService/GetJobTimeline", map[string]string{"jobId": "nope"}, nil)
		if status != http.StatusNotFound {
			t.Errorf("GetJobTimeline of an unknown job: HTTP %d %s, want 404", status, body)
		}
	})
	t.Run("event types beyond the read model need ClickHouse", func(t *testing.T) {
		sel := map[string]any{"createdAfter": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano), "createdBefore": time.Now().UTC().Format(time.RFC3339Nano), "eventType": "job.ready"}
		status, body := s.call(t, "ReplayService/ReplayJobs", map[string]any{"selection": sel, "dryRun": true}, nil)
		if status != http.StatusBadRequest || !strings.Contains(string(body), "selection.eventType") {
			t.Errorf("job.ready filter without ClickHouse: HTTP %d %s, want invalid_argument naming selection.eventType", status, body)
		}
	})
	t.Run("QueryAttempts needs ClickHouse", func(t *testing.T) {
		status, body := s.call(t, "AuditService/QueryAttempts", map[string]any{}, nil)
		if status != http.StatusBadRequest || !strings.Contains(string(body), "clickhouse") {
			t.Errorf("QueryAttempts without ClickHouse: HTTP %d %s, want failed_precondition naming --clickhouse-dsn", status, body)
		}
	})
}

var chDBSeq atomic.Int64

func TestAuditTimelineFromClickHouse(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("SLUICE_TEST_CLICKHOUSE_DSN")
	if dsn == "" {
		t.Skip("CLICKHOUSE NOT TESTED: SLUICE_TEST_CLICKHOUSE_DSN is unset (the README's test command starts ClickHouse and sets it)")
	}
	db := fmt.Sprintf("sluice_e2e_%d_%d", time.Now().UnixNano(), chDBSeq.Add(1))
	t.Cleanup(func() { dropClickHouseDB(t, db) })
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0",
		"--clickhouse-dsn", dsn, "--clickhouse-database", db)
	id := failedTwice(t, s, recv)

	// The sink flushes within a second; wait until ClickHouse has the
	// last attempt.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var tl timelineJSON
		status, body := s.call(t, "AuditService/GetJobTimeline", map[string]string{"jobId": id}, &tl)
		if status == http.StatusOK && tl.Source == "clickhouse" && len(tl.Events) > 0 && tl.Events[len(tl.Events)-1].Outcome == "succeeded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse timeline not complete within 30s: HTTP %d %s", status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkFailedTwice(t, s, id, "clickhouse")

	var atts struct {
		Attempts []struct {
			JobID      string `json:"jobId"`
			Attempt    int    `json:"attempt"`
			StatusCode int    `json:"statusCode"`
			Queue      string `json:"queue"`
			TargetURL  string `json:"targetUrl"`
		} `json:"attempts"`
	}
	// With ClickHouse a replay can select by any event type.
	rng := map[string]any{"createdAfter": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano), "createdBefore": time.Now().UTC().Format(time.RFC3339Nano), "eventType": "job.ready"}
	var dry struct{ Matched int }
	if status, body := s.call(t, "ReplayService/ReplayJobs", map[string]any{"selection": rng, "dryRun": true}, &dry); status != http.StatusOK || dry.Matched != 1 {
		t.Errorf("dry run of jobs with job.ready events: HTTP %d %s, want 1 match", status, body)
	}
	status, body := s.call(t, "AuditService/QueryAttempts", map[string]any{"queue": "audited", "statusCode": 503}, &atts)
	if status != http.StatusOK || len(atts.Attempts) != 2 {
		t.Fatalf("QueryAttempts 503s: HTTP %d %s, want 2 attempts", status, body)
	}
	for _, a := range atts.Attempts {
		if a.JobID != id || a.TargetURL != recv.URL+"/fail2" {
			t.Errorf("attempt %+v: want job %s to %s/fail2", a, id, recv.URL)
		}
	}
}

// dropClickHouseDB drops a test's database over the HTTP interface.
func dropClickHouseDB(t *testing.T, db string) {
	base := os.Getenv("SLUICE_TEST_CLICKHOUSE_HTTP")
	if base == "" {
		return
	}
	resp, err := http.Post(base+"/", "text/plain", strings.NewReader("DROP DATABASE IF EXISTS "+db))
	if err != nil {
		t.Logf("drop clickhouse database %s: %v", db, err)
		return
	}
	resp.Body.Close()
}

func TestDeliveryWhileClickHouseIsDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "clickhouse://" + ln.Addr().String() + "/default"
	ln.Close()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--clickhouse-dsn", closed)
	id := failedTwice(t, s, recv)
	// The audit trail cannot be written; the timeline comes from the
	// read model.
	checkFailedTwice(t, s, id, "projection")
}

// TestAnalyticsRoleOnServe runs the production layout: an api node and an
// analytics node of its own, on the test bed's Kafka, Redis and
// ClickHouse.
func TestAnalyticsRoleOnServe(t *testing.T) {
	t.Parallel()
	brokers, redisURL, dsn := os.Getenv("SLUICE_TEST_KAFKA_BROKERS"), os.Getenv("SLUICE_TEST_REDIS_URL"), os.Getenv("SLUICE_TEST_CLICKHOUSE_DSN")
	if brokers == "" || redisURL == "" || dsn == "" {
		t.Skip("REAL KAFKA/REDIS/CLICKHOUSE NOT TESTED: SLUICE_TEST_KAFKA_BROKERS, SLUICE_TEST_REDIS_URL and SLUICE_TEST_CLICKHOUSE_DSN must be set (the README's test command sets them)")
	}
	db := fmt.Sprintf("sluice_e2e_%d_%d", time.Now().UnixNano(), chDBSeq.Add(1))
	t.Cleanup(func() { dropClickHouseDB(t, db) })
	prefix := fmt.Sprintf("audit%d.", time.Now().UnixNano())
	common := []string{"--kafka-brokers", brokers, "--redis-url", redisURL, "--redis-prefix", prefix, "--topic-prefix", prefix,
		"--clickhouse-dsn", dsn, "--clickhouse-database", db}
	key := "sk_audit_" + fmt.Sprint(time.Now().UnixNano())
	s := startSluice(t, key, append([]string{"serve", "--roles", "api,delivery,projections,tiers", "--node-id", "a",
		"--partitions", "4", "--replication-factor", "1", "--create-topics", "--bootstrap-api-key", key,
		"--allow-loopback-targets", "--http-addr", "127.0.0.1:0"}, common...)...)
	startSluice(t, "", append([]string{"serve", "--roles", "analytics", "--node-id", "b"}, common...)...)

	recv := newReceiver(t)
	id := failedTwice(t, s, recv)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var tl timelineJSON
		status, _ := s.call(t, "AuditService/GetJobTimeline", map[string]string{"jobId": id}, &tl)
		if status == http.StatusOK && tl.Source == "clickhouse" && len(tl.Events) > 0 && tl.Events[len(tl.Events)-1].Outcome == "succeeded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the analytics node did not copy job %s within 30s (last source %q)", id, tl.Source)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkFailedTwice(t, s, id, "clickhouse")

	resp, err := httpClient.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if want := `sluice_consumer_lag{group="` + prefix + `analytics"`; !strings.Contains(string(b), want) {
		t.Errorf("/metrics has no %s...} series", want)
	}
}
