package receiver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/inbound/receiver"
	"github.com/sluicehq/sluice/inbound/sources"
	"github.com/sluicehq/sluice/inbound/verify"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

type catalog map[string]*sources.Entry

func (c catalog) Entry(id string) (*sources.Entry, bool) { e, ok := c[id]; return e, ok }

type outcomes struct {
	mu  sync.Mutex
	got []string
}

func (o *outcomes) Received(outcome, kind string, _ int, _ time.Duration) {
	o.mu.Lock()
	o.got = append(o.got, outcome+"/"+kind)
	o.mu.Unlock()
}

const ghSecret = "gh-receiver-secret"

type fixture struct {
	c    *eventlogtest.Cluster
	url  string
	obs  *outcomes
	adm  *kadm.Client
	topc string
}

func newFixture(t *testing.T, c *eventlogtest.Cluster, maxBody int64) *fixture {
	t.Helper()
	entry := func(id string, v *sluicev1.Verification) *sources.Entry {
		ver, err := verify.New(v, "verification")
		if err != nil {
			t.Fatal(err)
		}
		return &sources.Entry{TenantID: "ten_1", Source: &sluicev1.Source{Id: id, Verification: v}, Verifier: ver}
	}
	cat := catalog{
		"src_gh": entry("src_gh", &sluicev1.Verification{Kind: &sluicev1.Verification_Github{Github: &sluicev1.GitHubVerification{Secret: ghSecret}}}),
		"src_tok": entry("src_tok", &sluicev1.Verification{Kind: &sluicev1.Verification_Token{Token: &sluicev1.TokenVerification{
			Header: "X-Token", Value: "token-value-1"}}}),
	}
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	obs := &outcomes{}
	rc, err := receiver.New(receiver.Config{Sources: cat, Log: app, Topic: c.Topics.Inbox(), MaxBodyBytes: maxBody, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /in/{source_id}", rc)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &fixture{c: c, url: srv.URL, obs: obs, adm: c.Admin(t), topc: c.Topics.Inbox()}
}

func (f *fixture) post(t *testing.T, source string, body []byte, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url+"/in/"+source+"?via=test", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// inbox reads every record of the inbox.
func (f *fixture) inbox(t *testing.T) []*eventv1.InboundRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ends, err := f.adm.ListEndOffsets(ctx, f.topc)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.c.Brokers...), kgo.ConsumeTopics(f.topc),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*eventv1.InboundRequest
	for int64(len(out)) < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d inbox records: %v", len(out), total, ctx.Err())
		}
		fs.EachRecord(func(rec *kgo.Record) {
			req, err := receiver.Decode(rec)
			if err != nil {
				t.Fatal(err)
			}
			if string(rec.Key) != req.SourceId {
				t.Errorf("record key %q, want the source id %q", rec.Key, req.SourceId)
			}
			out = append(out, req)
		})
	}
	return out
}

func header(req *eventv1.InboundRequest, name string) []string {
	for _, h := range req.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Values
		}
	}
	return nil
}

func TestReceiverAppendsVerifiedRequestsOnly(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		t.Parallel()
		f := newFixture(t, c, 1<<20)
		body := []byte(`{"zen":"Keep it logically awesome.",  "hook_id":1}`)
		sig := verify.SignGitHub([]byte(ghSecret), body)

		status, answer := f.post(t, "src_gh", body, "X-Hub-Signature-256", sig, "X-GitHub-Event", "ping", "X-Multi", "a", "X-Multi", "b")
		if status != http.StatusAccepted || !strings.Contains(answer, "requestId") {
			t.Fatalf("signed request: got %d %s, want 202 with a requestId", status, answer)
		}
		for _, bad := range [][]string{
			{"X-Hub-Signature-256", verify.SignGitHub([]byte("wrong secret"), body)},
			{"X-Hub-Signature-256", "sha256=nothex"},
			{},
		} {
			if status, answer := f.post(t, "src_gh", body, bad...); status != http.StatusUnauthorized {
				t.Errorf("request with %v: got %d %s, want 401", bad, status, answer)
			}
		}
		if status, _ := f.post(t, "src_unknown", body); status != http.StatusNotFound {
			t.Errorf("unknown source: got %d, want 404", status)
		}
		if status, _ := f.post(t, "src_gh", make([]byte, 1<<20+1), "X-Hub-Signature-256", sig); status != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized body: got %d, want 413", status)
		}
		if status, _ := f.post(t, "src_tok", []byte("a=1"), "X-Token", "token-value-1"); status != http.StatusAccepted {
			t.Errorf("token request: got %d, want 202", status)
		}

		got := f.inbox(t)
		if len(got) != 2 {
			t.Fatalf("inbox holds %d requests, want 2 (the verified ones)", len(got))
		}
		gh := got[0]
		if gh.SourceId != "src_gh" {
			gh = got[1]
		}
		if !bytes.Equal(gh.Body, body) || gh.TenantId != "ten_1" || gh.Method != "POST" || gh.Path != "/in/src_gh" ||
			gh.RawQuery != "via=test" || gh.VerifiedBy != "github" || gh.RemoteAddr == "" || gh.ReceivedAt == nil || gh.RequestId == "" {
			t.Errorf("inbox record: got %+v; want the request byte-exact with its metadata", gh)
		}
		if v := header(gh, "X-Multi"); len(v) != 2 || v[0] != "a" || v[1] != "b" {
			t.Errorf("X-Multi: got %v, want [a b]", v)
		}
		if v := header(gh, "X-Hub-Signature-256"); len(v) != 1 || v[0] != sig {
			t.Errorf("signature header: got %v, want it kept", v)
		}
		tok := got[0]
		if tok.SourceId != "src_tok" {
			tok = got[1]
		}
		if v := header(tok, "X-Token"); len(v) != 1 || v[0] != receiver.Redacted {
			t.Errorf("token header in the inbox: got %v, want it redacted", v)
		}
		f.obs.mu.Lock()
		defer f.obs.mu.Unlock()
		want := []string{"accepted/github", "verification_failed/github", "verification_failed/github", "verification_failed/github", "unknown_source/", "too_large/github", "accepted/token"}
		if strings.Join(f.obs.got, ",") != strings.Join(want, ",") {
			t.Errorf("observed outcomes %v, want %v", f.obs.got, want)
		}
	})
}

// A body at the 25 MiB default is kept byte-exact through the broker.
func TestReceiverKeepsLargeBodies(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		f := newFixture(t, c, 0)
		body := make([]byte, receiver.DefaultMaxBodyBytes)
		_, _ = rand.Read(body)
		status, answer := f.post(t, "src_gh", body, "X-Hub-Signature-256", verify.SignGitHub([]byte(ghSecret), body))
		if status != http.StatusAccepted {
			t.Fatalf("25 MiB body: got %d %s, want 202", status, answer)
		}
		got := f.inbox(t)
		if len(got) != 1 || !bytes.Equal(got[0].Body, body) {
			t.Fatalf("inbox: got %d records, want the 25 MiB body byte-exact", len(got))
		}
	})
}

// With the broker gone the request is answered 503 within the append
// timeout: nothing was promised.
func TestReceiverAnswers503WhenTheLogIsDown(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "sluice.inbox"))
	if err != nil {
		t.Fatal(err)
	}
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: kc.ListenAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	v := verify.GitHub{Secrets: [][]byte{[]byte(ghSecret)}}
	cat := catalog{"src_gh": {TenantID: "ten_1", Source: &sluicev1.Source{Id: "src_gh"}, Verifier: v}}
	rc, err := receiver.New(receiver.Config{Sources: cat, Log: app, Topic: "sluice.inbox", AppendTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	kc.Close()
	body := []byte(`{}`)
	req := httptest.NewRequest(http.MethodPost, "/in/src_gh", bytes.NewReader(body))
	req.SetPathValue("source_id", "src_gh")
	req.Header.Set("X-Hub-Signature-256", verify.SignGitHub([]byte(ghSecret), body))
	w := httptest.NewRecorder()
	start := time.Now()
	rc.ServeHTTP(w, req)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("broker down: got %d (Retry-After %q), want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("answered after %s, want within the 500ms append timeout", took)
	}
}

// A sender that declares a body and stalls is cut off after BodyTimeout
// and nothing is stored.
func TestReceiverCutsOffAStalledBody(t *testing.T) {
	t.Parallel()
	v := verify.None{}
	cat := catalog{"src_any": {TenantID: "ten_1", Source: &sluicev1.Source{Id: "src_any"}, Verifier: v}}
	var appended atomic.Int64
	rc, err := receiver.New(receiver.Config{Sources: cat, Log: countingLog{&appended}, Topic: "sluice.inbox", BodyTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /in/{source_id}", rc)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 25 MiB declared, 10 bytes sent, then nothing.
	fmt.Fprintf(conn, "POST /in/src_any HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n0123456789", 25<<20)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("stalled body answered %d, want an error", resp.StatusCode)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stalled body held for %s, want about the 300ms body timeout", took)
	}
	if n := appended.Load(); n != 0 {
		t.Fatalf("%d records appended for a stalled body", n)
	}
}

// countingLog counts appends and acknowledges them.
type countingLog struct{ n *atomic.Int64 }

func (l countingLog) Append(_ context.Context, recs ...*kgo.Record) error {
	l.n.Add(int64(len(recs)))
	return nil
}
