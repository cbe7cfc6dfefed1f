package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// bodiesSeen counts, per body, the distinct webhook ids (jobs) the
// receiver was sent it by.
func (r *receiver) bodiesSeen() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[string]int)
	for _, b := range r.bodies {
		seen[string(b)]++
	}
	return seen
}

func TestReplayTimeRange(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	enqueue := func(name, queue string) string {
		t.Helper()
		var enq enqueueAnswer
		if status, body := s.call(t, "JobService/Enqueue", map[string]any{
			"queue": queue, "payload": map[string]string{"job": name}, "target": map[string]string{"url": recv.URL + "/ok"},
		}, &enq); status != http.StatusOK {
			t.Fatalf("Enqueue: HTTP %d %s", status, body)
		}
		time.Sleep(20 * time.Millisecond) // distinct creation times
		return enq.Job.ID
	}
	ids := []string{enqueue("A", "orders")}
	from := time.Now()
	time.Sleep(20 * time.Millisecond)
	ids = append(ids, enqueue("B", "orders"), enqueue("C", "orders"), enqueue("D", "emails"), enqueue("E", "orders"))
	to := time.Now()
	time.Sleep(20 * time.Millisecond)
	ids = append(ids, enqueue("F", "orders"))
	for _, id := range ids {
		waitState(t, s, id, "JOB_STATE_SUCCEEDED", 30*time.Second)
	}
	rng := []string{"--from", from.UTC().Format(time.RFC3339Nano), "--to", to.UTC().Format(time.RFC3339Nano), "--queue", "orders"}

	if out := s.cliOK(t, append([]string{"replay", "--dry-run"}, rng...)...); strings.TrimSpace(out) != "3 jobs match" {
		t.Errorf("dry run: got %q, want 3 jobs match", out)
	}
	time.Sleep(300 * time.Millisecond)
	if seen := recv.bodiesSeen(); len(seen) != 6 {
		t.Fatalf("before the replay: %d bodies delivered, want 6 (a dry run delivers nothing): %v", len(seen), seen)
	}

	// One page at a time, to another path: B, C and E again, nothing else.
	out := s.cliOK(t, append([]string{"replay", "--replay-id", "r1", "--page-size", "1", "--rate", "50", "--to-url", recv.URL + "/replayed"}, rng...)...)
	if strings.TrimSpace(out) != "replayed 3 jobs (replay id r1)" {
		t.Errorf("replay: got %q, want replayed 3 jobs", out)
	}
	want := map[string]int{`{"job":"A"}`: 1, `{"job":"B"}`: 2, `{"job":"C"}`: 2, `{"job":"D"}`: 1, `{"job":"E"}`: 2, `{"job":"F"}`: 1}
	deadline := time.Now().Add(20 * time.Second)
	for {
		seen := recv.bodiesSeen()
		if equalCounts(seen, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries per body: got %v, want %v", seen, want)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The same replay again changes nothing: its jobs already exist.
	var again struct {
		JobIDs     []string `json:"jobIds"`
		NextCursor string   `json:"nextCursor"`
	}
	status, body := s.call(t, "ReplayService/ReplayJobs", map[string]any{
		"selection": map[string]any{"createdAfter": from.UTC().Format(time.RFC3339Nano), "createdBefore": to.UTC().Format(time.RFC3339Nano), "queue": "orders"},
		"replayId":  "r1", "targetOverride": map[string]string{"url": recv.URL + "/replayed"}, "pageSize": 10,
	}, &again)
	if status != http.StatusOK || len(again.JobIDs) != 3 || again.NextCursor != "" {
		t.Fatalf("replay again: HTTP %d %s, want the same 3 job ids and no cursor", status, body)
	}
	for _, id := range again.JobIDs {
		job := waitState(t, s, id, "JOB_STATE_SUCCEEDED", 10*time.Second)
		var got struct {
			Job struct {
				Target struct{ URL string } `json:"target"`
			} `json:"job"`
		}
		s.call(t, "JobService/GetJob", map[string]string{"id": id}, &got)
		if job.Queue != "orders" || got.Job.Target.URL != recv.URL+"/replayed" {
			t.Errorf("replayed job %s: queue %q, target %q; want orders, %s/replayed", id, job.Queue, got.Job.Target.URL, recv.URL)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if seen := recv.bodiesSeen(); !equalCounts(seen, want) {
		t.Errorf("after replaying again: deliveries per body %v, want still %v", seen, want)
	}

	// A replay resumed from a cursor replays only what follows it.
	var page struct {
		NextCursor string `json:"nextCursor"`
	}
	status, body = s.call(t, "ReplayService/ReplayJobs", map[string]any{
		"selection": map[string]any{"createdAfter": from.UTC().Format(time.RFC3339Nano), "createdBefore": to.UTC().Format(time.RFC3339Nano), "queue": "orders"},
		"replayId":  "r2", "pageSize": 1,
	}, &page)
	if status != http.StatusOK || page.NextCursor == "" {
		t.Fatalf("first page of r2: HTTP %d %s, want a cursor", status, body)
	}
	out = s.cliOK(t, append([]string{"replay", "--replay-id", "r2", "--cursor", page.NextCursor}, rng...)...)
	if strings.TrimSpace(out) != "replayed 2 jobs (replay id r2)" {
		t.Errorf("resumed replay: got %q, want replayed 2 jobs", out)
	}
	want = map[string]int{`{"job":"A"}`: 1, `{"job":"B"}`: 3, `{"job":"C"}`: 3, `{"job":"D"}`: 1, `{"job":"E"}`: 3, `{"job":"F"}`: 1}
	deadline = time.Now().Add(20 * time.Second)
	for !equalCounts(recv.bodiesSeen(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after the resumed replay: deliveries per body %v, want %v", recv.bodiesSeen(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}

	t.Run("bad input names the field", func(t *testing.T) {
		for _, c := range []struct {
			req   map[string]any
			field string
		}{
			{map[string]any{"replayId": "x"}, "selection.createdAfter"},
			{map[string]any{"selection": map[string]any{"createdAfter": to.Format(time.RFC3339Nano), "createdBefore": from.Format(time.RFC3339Nano)}, "replayId": "x"}, "selection.createdBefore"},
			{map[string]any{"selection": map[string]any{"createdAfter": from.Format(time.RFC3339Nano), "createdBefore": to.Format(time.RFC3339Nano)}}, "replayId"},
			{map[string]any{"selection": map[string]any{"createdAfter": from.Format(time.RFC3339Nano), "createdBefore": to.Format(time.RFC3339Nano), "eventType": "job.exploded"}, "dryRun": true}, "selection.eventType"},
			{map[string]any{"selection": map[string]any{"createdAfter": from.Format(time.RFC3339Nano), "createdBefore": to.Format(time.RFC3339Nano)}, "replayId": "x", "targetOverride": map[string]string{"url": "ftp://x"}}, "targetOverride.target.url"},
		} {
			status, body := s.call(t, "ReplayService/ReplayJobs", c.req, nil)
			var e struct{ Code, Message string }
			_ = json.Unmarshal(body, &e)
			if status != http.StatusBadRequest || e.Code != "invalid_argument" || !strings.HasPrefix(e.Message, c.field+":") {
				t.Errorf("ReplayJobs %v: HTTP %d %s, want invalid_argument naming %s", c.req, status, body, c.field)
			}
		}
	})
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
