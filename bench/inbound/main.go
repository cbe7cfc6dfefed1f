// Command inbound measures the accept latency of inbound webhooks: signed
// GitHub-style requests posted to POST /in/{source_id} at a fixed rate,
// each timed from when it was due to be sent until its 2xx (so a stall
// delays every request behind it and counts against the percentiles).
//
// Without -server it starts `sluice serve` (every default role) on the
// test bed's Kafka and Redis with fresh topics:
//
//	go run ./bench/inbound -brokers 127.0.0.1:39092 -redis redis://127.0.0.1:36379/0 -rate 1000 -duration 60s
//
// With -server and -api-key it loads a running server. Results go to
// stdout; progress to stderr.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/inbound/verify"
	"github.com/sluicehq/sluice/tenancy"
)

var (
	brokers    = flag.String("brokers", os.Getenv("SLUICE_TEST_KAFKA_BROKERS"), "Kafka bootstrap brokers (when starting a server)")
	redisURL   = flag.String("redis", os.Getenv("SLUICE_TEST_REDIS_URL"), "Redis URL (when starting a server)")
	binary     = flag.String("sluice", "", "sluice binary; built from ./cmd/sluice when empty")
	partitions = flag.Int("partitions", 12, "partitions of the topics (when starting a server)")
	roles      = flag.String("roles", "", "roles of the started server; empty = serve's default (every role)")
	split      = flag.Bool("split", false, "start the api role and the other roles as two processes")
	server     = flag.String("server", "", "base URL of a running server; empty starts one")
	apiKey     = flag.String("api-key", "", "API key of the running server")
	rate       = flag.Float64("rate", 1000, "requests per second")
	duration   = flag.Duration("duration", 60*time.Second, "length of the run")
	warmup     = flag.Duration("warmup", 5*time.Second, "requests due in this first part of the run are not counted")
	bodyBytes  = flag.Int("body", 3000, "bytes of each request body (GitHub push events are a few KiB)")
	workers    = flag.Int("workers", 512, "requests in flight at most")
)

const secret = "bench-github-secret"

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *server == "" {
		stop := startServer()
		defer stop()
	}
	if *apiKey == "" {
		log.Fatal("inbound: -api-key is required with -server")
	}
	ingest := createSource()
	log.Printf("inbound: %s at %.0f req/s for %s", ingest, *rate, *duration)
	before := loadavg()
	res := run(ingest)
	res.print(os.Stdout)
	fmt.Printf("load average before %s, after %s (%d cores)\n", before, loadavg(), runtime.NumCPU())
}

// startServer builds and starts `sluice serve` on a fresh topic prefix
// (with -split, an api node and a node of the other roles) and returns
// the stop function.
func startServer() func() {
	if *brokers == "" || *redisURL == "" {
		log.Fatal("inbound: -brokers and -redis are required to start a server (or SLUICE_TEST_KAFKA_BROKERS / SLUICE_TEST_REDIS_URL)")
	}
	if *binary == "" {
		dir, err := os.MkdirTemp("", "sluice-bench-inbound")
		check(err)
		*binary = filepath.Join(dir, "sluice")
		build := exec.Command("go", "build", "-o", *binary, "./cmd/sluice")
		build.Stderr = os.Stderr
		check(build.Run())
	}
	*apiKey = tenancy.NewKey()
	prefix := fmt.Sprintf("inbench%d.", time.Now().UnixNano())
	common := []string{"serve", "--kafka-brokers", *brokers, "--redis-url", *redisURL,
		"--topic-prefix", prefix, "--partitions", strconv.Itoa(*partitions), "--replication-factor", "1",
		"--log-level", "warn"}
	first := append(slices.Clip(common), "--create-topics", "--bootstrap-api-key", *apiKey,
		"--http-addr", "127.0.0.1:0", "--node-id", "inbench-api")
	switch {
	case *split:
		first = append(first, "--roles", "api")
	case *roles != "":
		first = append(first, "--roles", *roles)
	}
	url, stopFirst := startProc(first)
	*server = url
	if !*split {
		return stopFirst
	}
	_, stopRest := startProc(append(slices.Clip(common), "--roles", "delivery,projections,tiers,router", "--node-id", "inbench-rest"))
	return func() { stopRest(); stopFirst() }
}

// startProc starts sluice with args and waits for its ready line.
func startProc(args []string) (string, func()) {
	cmd := exec.Command(*binary, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	check(err)
	check(cmd.Start())
	sc := bufio.NewScanner(out)
	kill := time.AfterFunc(90*time.Second, func() { _ = cmd.Process.Kill() })
	ready := ""
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "sluice ready "); ok {
			ready = s
			break
		}
	}
	kill.Stop()
	if ready == "" {
		log.Fatal("inbound: sluice exited before it was ready")
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return ready, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
}

// createSource creates a GitHub source routing pushes to a queue and
// returns its ingest URL.
func createSource() string {
	body, _ := json.Marshal(map[string]any{
		"name":         "bench",
		"verification": map[string]any{"github": map[string]any{"secret": secret}},
		"routes":       []any{map[string]any{"eventTypes": []string{"push"}, "queue": "bench-pushes"}},
	})
	req, err := http.NewRequest(http.MethodPost, *server+"/sluice.v1.SourceService/CreateSource", bytes.NewReader(body))
	check(err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+*apiKey)
	resp, err := http.DefaultClient.Do(req)
	check(err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("inbound: CreateSource: %d %s", resp.StatusCode, b)
	}
	var out struct {
		Source struct {
			IngestURL string `json:"ingestUrl"`
		} `json:"source"`
	}
	check(json.Unmarshal(b, &out))
	return out.Source.IngestURL
}

type sample struct {
	latency time.Duration // from due to answered
	status  int
	counted bool
}

type result struct {
	sent, counted int
	byStatus      map[int]int
	errors        int
	lat           []time.Duration
	elapsed       time.Duration
}

// run posts signed requests at the fixed rate and collects their timings.
func run(url string) result {
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: *workers, MaxIdleConnsPerHost: *workers, IdleConnTimeout: time.Minute,
		},
	}
	n := int(*rate * duration.Seconds())
	interval := time.Duration(float64(time.Second) / *rate)
	pad := strings.Repeat("x", max(0, *bodyBytes-200))
	type job struct {
		i   int
		due time.Time
	}
	jobs := make(chan job, n)
	samples := make([]sample, n)
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				delivery := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), j.i)
				body := []byte(`{"ref":"refs/heads/main","delivery":"` + delivery + `","pad":"` + pad + `"}`)
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-GitHub-Event", "push")
				req.Header.Set("X-GitHub-Delivery", delivery)
				req.Header.Set("X-Hub-Signature-256", verify.SignGitHub([]byte(secret), body))
				resp, err := client.Do(req)
				s := sample{counted: j.due.Sub(start) >= *warmup}
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					s.status = resp.StatusCode
				}
				s.latency = time.Since(j.due)
				samples[j.i] = s
			}
		}()
	}
	start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *duration+time.Minute)
	defer cancel()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		jobs <- job{i, due}
		if i > 0 && i%(int(*rate)*10) == 0 {
			log.Printf("inbound: %d of %d sent", i, n)
		}
	}
	close(jobs)
	wg.Wait()
	res := result{sent: n, byStatus: map[int]int{}, elapsed: time.Since(start)}
	for _, s := range samples {
		if s.status == 0 {
			res.errors++
		} else {
			res.byStatus[s.status]++
		}
		if s.counted && s.status == http.StatusAccepted {
			res.counted++
			res.lat = append(res.lat, s.latency)
		}
	}
	slices.Sort(res.lat)
	return res
}

var start time.Time

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

func (r result) print(w io.Writer) {
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + " ms"
	}
	fmt.Fprintf(w, "rate %.0f req/s for %s (%d sent in %s), body %d B, warm-up %s not counted\n",
		*rate, *duration, r.sent, r.elapsed.Round(time.Millisecond), *bodyBytes, *warmup)
	fmt.Fprintf(w, "answers: %v, transport errors: %d\n", r.byStatus, r.errors)
	fmt.Fprintf(w, "accept latency over %d requests: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		r.counted, ms(r.pct(0.50)), ms(r.pct(0.90)), ms(r.pct(0.99)), ms(r.pct(0.999)), ms(r.pct(1)))
}

// loadavg is the 1-minute load average, or "?" off Linux.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func check(err error) {
	if err != nil {
		log.Fatal("inbound: ", err)
	}
}
