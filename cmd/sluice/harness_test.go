package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/delivery"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sluice:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running sluice process.
type server struct {
	cmd    *exec.Cmd
	URL    string
	Key    string
	Secret string
	// Brokers of the embedded Kafka (dev only).
	Brokers string
	// Metrics is the base URL of the --metrics-addr listener, if any.
	Metrics string
	exited  chan struct{}
}

// startSluice runs the binary with args and waits for its ready line.
func startSluice(t *testing.T, key string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "sluice.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, Key: key, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(s.exited) }()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("sluice log tail:\n%s", b)
		}
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "api key: "):
				s.Key = strings.TrimPrefix(line, "api key: ")
			case strings.HasPrefix(line, "embedded kafka: "):
				s.Brokers = strings.TrimPrefix(line, "embedded kafka: ")
			case strings.HasPrefix(line, "metrics "):
				s.Metrics = strings.TrimPrefix(line, "metrics ")
			case strings.HasPrefix(line, "signing secret: "):
				s.Secret = strings.TrimPrefix(line, "signing secret: ")
			case strings.HasPrefix(line, "sluice ready "):
				s.URL = strings.TrimPrefix(line, "sluice ready ")
				ready <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("stdout closed before the ready line: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("sluice did not print its ready line within 90s")
	}
	return s
}

// kill sends SIGKILL and waits for the process to go.
func (s *server) kill() {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// terminate sends SIGTERM and returns the exit code.
func (s *server) terminate(t *testing.T) int {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("sluice did not exit within 60s of SIGTERM")
	}
	return s.cmd.ProcessState.ExitCode()
}

// call makes a Connect JSON call and decodes the answer into out (when
// non-nil). It returns the HTTP status and the raw body.
func (s *server) call(t testing.TB, method string, req any, out any) (int, []byte) {
	t.Helper()
	return callWith(t, s.URL, s.Key, method, req, out)
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func callWith(t testing.TB, base, key, method string, req any, out any) (int, []byte) {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	hreq, err := http.NewRequest(http.MethodPost, base+"/sluice.v1."+method, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	if key != "" {
		hreq.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := httpClient.Do(hreq)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("decode %s answer %s: %v", method, b, err)
		}
	}
	return resp.StatusCode, b
}

type jobJSON struct {
	ID        string `json:"id"`
	Queue     string `json:"queue"`
	State     string `json:"state"`
	Attempt   int    `json:"attempt"`
	LastError string `json:"lastError"`
}

type enqueueAnswer struct {
	Job     jobJSON `json:"job"`
	Created bool    `json:"created"`
}

// receiver is a local webhook receiver that checks signatures and counts
// deliveries per webhook-id.
type receiver struct {
	*httptest.Server
	mu        sync.Mutex
	secret    string
	got       map[string]int
	bodies    map[string][]byte
	times     map[string][]time.Time
	badSigned int
	healed    bool // /flaky answers 503 until heal
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{got: make(map[string]int), bodies: make(map[string][]byte), times: make(map[string][]time.Time)}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) setSecret(s string) {
	r.mu.Lock()
	r.secret = s
	r.mu.Unlock()
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get(delivery.HeaderID)
	ts, _ := strconv.ParseInt(req.Header.Get(delivery.HeaderTimestamp), 10, 64)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secret != "" {
		signer, err := delivery.NewSigner(r.secret)
		if err != nil || !signer.Verify(id, ts, body, req.Header.Get(delivery.HeaderSignature)) {
			r.badSigned++
		}
	}
	r.got[id]++
	r.bodies[id] = body
	r.times[id] = append(r.times[id], time.Now())
	switch {
	case req.URL.Path == "/gone":
		w.WriteHeader(http.StatusGone)
	case req.URL.Path == "/fail":
		w.WriteHeader(http.StatusInternalServerError)
	case req.URL.Path == "/fail2" && r.got[id] <= 2:
		w.WriteHeader(http.StatusServiceUnavailable)
	case req.URL.Path == "/flaky" && !r.healed:
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// heal makes /flaky answer 204 from now on.
func (r *receiver) heal() {
	r.mu.Lock()
	r.healed = true
	r.mu.Unlock()
}

// body returns the latest body delivered with webhook-id id.
func (r *receiver) body(id string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies[id]
}

func (r *receiver) arrivals(id string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.times[id]...)
}

func (r *receiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[id]
}

// waitState polls GetJob until the job reads want or the deadline passes.
func waitState(t *testing.T, s *server, id, want string, within time.Duration) jobJSON {
	t.Helper()
	deadline := time.Now().Add(within)
	var got struct{ Job jobJSON }
	for {
		status, body := s.call(t, "JobService/GetJob", map[string]string{"id": id}, &got)
		if status == http.StatusOK && got.Job.State == want {
			return got.Job
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: state %q (HTTP %d %s), want %s within %s", id, got.Job.State, status, body, want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
