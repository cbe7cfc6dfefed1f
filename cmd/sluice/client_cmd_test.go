package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// cli runs the sluice binary as a client of s and returns stdout, stderr
// and the exit code.
func (s *server) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "SLUICE_SERVER="+s.URL, "SLUICE_API_KEY="+s.Key)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run sluice %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// cliOK runs a client command that must succeed and returns its stdout.
func (s *server) cliOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := s.cli(t, args...)
	if code != 0 {
		t.Fatalf("sluice %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
	}
	return out
}

// cliJSON runs a client command with --json and decodes its answer.
func (s *server) cliJSON(t *testing.T, out any, args ...string) {
	t.Helper()
	raw := s.cliOK(t, append(args, "--json")...)
	if err := json.Unmarshal([]byte(raw), out); err != nil {
		t.Fatalf("sluice %s --json: %v in %q", strings.Join(args, " "), err, raw)
	}
}

// tableRows splits a table into rows of fields; the header is row 0.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

func TestCLIJobs(t *testing.T) {
	t.Parallel()
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")

	t.Run("enqueue, get, list, cancel, retry", func(t *testing.T) {
		out := s.cliOK(t, "jobs", "enqueue", "cli", `{"to":"ada"}`, "--priority", "high", "--delay", "1h", "--header", "X-A=1")
		rows := tableRows(out)
		if len(rows) != 2 || !slices.Equal(rows[0], []string{"ID", "QUEUE", "STATE", "CREATED"}) || rows[1][1] != "cli" || rows[1][3] != "true" {
			t.Fatalf("jobs enqueue: got table %q, want a header and one row for queue cli, created", out)
		}
		id := rows[1][0]
		var got struct{ Job jobJSON }
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, _, code := s.cli(t, "jobs", "get", id); code == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		s.cliJSON(t, &got, "jobs", "get", id)
		if got.Job.ID != id || got.Job.State != "JOB_STATE_SCHEDULED" {
			t.Errorf("jobs get --json: got %+v, want %s scheduled", got.Job, id)
		}
		detail := s.cliOK(t, "jobs", "get", id)
		for _, want := range []string{"id:", id, "state:", "scheduled", "priority:", "high", `{"to":"ada"}`} {
			if !strings.Contains(detail, want) {
				t.Errorf("jobs get: got %q, want it to contain %q", detail, want)
			}
		}
		var list struct{ Jobs []jobJSON }
		s.cliJSON(t, &list, "jobs", "list", "--queue", "cli", "--state", "scheduled")
		if len(list.Jobs) != 1 || list.Jobs[0].ID != id {
			t.Errorf("jobs list --queue cli --json: got %+v, want only %s", list.Jobs, id)
		}
		if out := s.cliOK(t, "jobs", "list", "--queue", "cli"); !strings.HasPrefix(out, "ID ") || !strings.Contains(out, id) {
			t.Errorf("jobs list: got %q, want a table with %s", out, id)
		}
		if out := s.cliOK(t, "jobs", "cancel", id); !strings.Contains(out, "cancelled") {
			t.Errorf("jobs cancel: got %q, want the job cancelled", out)
		}
		waitState(t, s, id, "JOB_STATE_CANCELLED", 10*time.Second)
		if out := s.cliOK(t, "jobs", "retry", id); !strings.Contains(out, id) {
			t.Errorf("jobs retry: got %q, want the job", out)
		}
	})

	t.Run("enqueue a file in batches", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jobs.jsonl")
		var b strings.Builder
		for i := range 7 {
			fmt.Fprintf(&b, `{"payload":{"i":%d},"runAt":"2099-01-01T00:00:00Z"}`+"\n", i)
		}
		b.WriteString("\n") // blank lines are skipped
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		out := s.cliOK(t, "jobs", "enqueue", "--file", path, "--batch", "3", "cli-file")
		if strings.TrimSpace(out) != "enqueued 7 jobs (7 new, 0 matched an idempotency key)" {
			t.Errorf("jobs enqueue --file: got %q, want 7 enqueued", out)
		}
		var res struct{ Results []enqueueAnswer }
		s.cliJSON(t, &res, "jobs", "enqueue", "--file", path, "cli-file2")
		if len(res.Results) != 7 || res.Results[0].Job.Queue != "cli-file2" {
			t.Errorf("jobs enqueue --file --json: got %d results (%+v), want 7 on queue cli-file2", len(res.Results), res.Results)
		}

		bad := filepath.Join(t.TempDir(), "bad.jsonl")
		os.WriteFile(bad, []byte(`{"payload":1}`+"\n"+`{"payload":}`+"\n"), 0o600)
		_, errOut, code := s.cli(t, "jobs", "enqueue", "--file", bad, "cli-bad")
		if code == 0 || !strings.Contains(errOut, "line 2") {
			t.Errorf("jobs enqueue of a file with a bad line 2: exit %d, stderr %q; want non-zero naming line 2", code, errOut)
		}
		var list struct{ Jobs []jobJSON }
		s.cliJSON(t, &list, "jobs", "list", "--queue", "cli-bad")
		if len(list.Jobs) != 0 {
			t.Errorf("jobs of a file whose only batch had a bad line: got %d, want none", len(list.Jobs))
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"jobs", "get", "no-such-job"}, "not_found"},
			{[]string{"jobs", "enqueue", "bad queue!", "1"}, "invalid_argument: queue"},
			{[]string{"jobs", "enqueue", "q", "{not json"}, "PAYLOAD"},
			{[]string{"jobs", "list", "--state", "sleeping"}, "--state"},
			{[]string{"jobs", "get", "x", "--api-key", "wrong"}, "unauthenticated"},
			{[]string{"jobs", "get"}, "usage: sluice jobs get ID"},
			{[]string{"jobs", "frobnicate"}, `unknown jobs command "frobnicate"`},
		} {
			_, errOut, code := s.cli(t, tc.args...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Errorf("sluice %s: exit %d, stderr %q; want non-zero with %q", strings.Join(tc.args, " "), code, errOut, tc.want)
			}
		}
	})
}

func TestCLIDeadLetters(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	var ids []string
	for range 3 {
		var res enqueueAnswer
		s.cliJSON(t, &res, "jobs", "enqueue", "cli-dlq", "{}", "--target-url", recv.URL+"/gone")
		ids = append(ids, res.Job.ID)
	}
	for _, id := range ids {
		waitState(t, s, id, "JOB_STATE_DEAD", 30*time.Second)
	}
	slices.Sort(ids)

	var list struct{ DeadLetters []deadLetterJSON }
	s.cliJSON(t, &list, "dlq", "list", "--queue", "cli-dlq")
	if got := deadIDs(list.DeadLetters); !slices.Equal(slices.Sorted(slices.Values(got)), ids) {
		t.Fatalf("dlq list --queue cli-dlq --json: got %v, want %v", got, ids)
	}
	table := s.cliOK(t, "dlq", "list", "--error", "410")
	if rows := tableRows(table); len(rows) != 4 || rows[0][0] != "ID" {
		t.Errorf("dlq list --error 410: got %q, want a header and 3 rows", table)
	}

	// By id, then by filter: every dead letter goes round again and dies
	// again (the target is gone).
	if out := s.cliOK(t, "dlq", "retry", ids[0], "--reason", "try again"); strings.TrimSpace(out) != "retried 1 of 1 dead letters" {
		t.Errorf("dlq retry ID: got %q, want 1 retried", out)
	}
	waitState(t, s, ids[0], "JOB_STATE_DEAD", 30*time.Second)
	var retried struct{ Retried int }
	s.cliJSON(t, &retried, "dlq", "retry", "--queue", "cli-dlq", "--payload", `{"v":2}`)
	if retried.Retried != 3 {
		t.Errorf("dlq retry --queue cli-dlq --json: got %d retried, want 3", retried.Retried)
	}
	for _, id := range ids {
		waitState(t, s, id, "JOB_STATE_DEAD", 30*time.Second)
	}

	_, errOut, code := s.cli(t, "dlq", "purge", "--queue", "cli-dlq")
	if code == 0 || !strings.Contains(errOut, "--yes") {
		t.Errorf("dlq purge without --yes: exit %d, stderr %q; want non-zero asking for --yes", code, errOut)
	}
	_, errOut, code = s.cli(t, "dlq", "retry")
	if code == 0 || !strings.Contains(errOut, "usage: sluice dlq retry") {
		t.Errorf("dlq retry with no selection: exit %d, stderr %q; want usage", code, errOut)
	}
	if out := s.cliOK(t, "dlq", "purge", "--queue", "cli-dlq", "--yes"); strings.TrimSpace(out) != "purged 3 of 3 dead letters" {
		t.Errorf("dlq purge --queue cli-dlq --yes: got %q, want 3 purged", out)
	}
}

func TestCLIQueues(t *testing.T) {
	t.Parallel()
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	s.cliOK(t, "jobs", "enqueue", "cli-q", "1", "--delay", "1h")

	var paused struct {
		Queue struct {
			Name   string
			Paused bool
		}
	}
	s.cliJSON(t, &paused, "queues", "pause", "cli-q")
	if paused.Queue.Name != "cli-q" || !paused.Queue.Paused {
		t.Errorf("queues pause --json: got %+v, want cli-q paused", paused.Queue)
	}
	out := s.cliOK(t, "queues", "update", "cli-q", "--max-attempts", "4", "--retry-schedule", "1s,5s", "--rate-limit", "2.5")
	for _, want := range []string{"max attempts:", "4", "schedule 1s, 5s", "2.5/s", "paused:", "true"} {
		if !strings.Contains(out, want) {
			t.Errorf("queues update: got %q, want it to contain %q", out, want)
		}
	}
	var got struct {
		Queue struct {
			Queue struct {
				Name        string
				Paused      bool
				MaxAttempts int
			}
			Stats struct{ Scheduled string }
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.cliJSON(t, &got, "queues", "get", "cli-q")
		if got.Queue.Stats.Scheduled == "1" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if q := got.Queue.Queue; q.Name != "cli-q" || !q.Paused || q.MaxAttempts != 4 || got.Queue.Stats.Scheduled != "1" {
		t.Errorf("queues get --json: got %+v, want cli-q paused, 4 attempts, 1 scheduled", got.Queue)
	}
	if out := s.cliOK(t, "queues", "resume", "cli-q"); !strings.Contains(out, "paused:") || strings.Contains(out, "true") {
		t.Errorf("queues resume: got %q, want paused: false", out)
	}
	if rows := tableRows(s.cliOK(t, "queues", "list")); len(rows) < 2 || rows[0][0] != "NAME" {
		t.Errorf("queues list: got %v, want a header and a row", rows)
	}
	if _, errOut, code := s.cli(t, "queues", "update", "cli-q"); code == 0 || !strings.Contains(errOut, "nothing to change") {
		t.Errorf("queues update with no settings: exit %d, stderr %q; want nothing to change", code, errOut)
	}
}
