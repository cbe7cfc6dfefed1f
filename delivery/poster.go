package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Request is one delivery attempt to make.
type Request struct {
	URL string
	ID  string // webhook-id: the job id, stable across attempts
	// ContentType of Body; empty means application/json.
	ContentType string
	Body        []byte
	// Headers are set after the content type and before the signature
	// headers, in order: later maps win.
	Headers []map[string]string
	// Signers each add a signature to webhook-signature, space-separated
	// (several while a secret rotation's overlap lasts). At least one.
	Signers []*Signer
	Timeout time.Duration
}

// Result is what one attempt observed.
type Result struct {
	StatusCode int
	Latency    time.Duration
	// Err is set when no response arrived (timeout, refused, forbidden).
	Err             error
	Excerpt         []byte
	ResponseHeaders map[string]string
}

// OK reports whether the attempt succeeded: a 2xx answer.
func (r Result) OK() bool { return r.Err == nil && r.StatusCode >= 200 && r.StatusCode < 300 }

// KeptResponseHeaders are the response headers copied into the attempt
// event (job.attempted's response_headers), when present: enough to tell
// who answered and why, never cookies or credentials.
var KeptResponseHeaders = []string{
	"Content-Type", "Content-Length", "Location", "Retry-After", "Server",
	"X-Request-Id", "X-Correlation-Id", "Cf-Ray", "X-Amz-Cf-Id",
}

// Poster makes delivery attempts over a shared connection pool.
type Poster struct {
	client     *http.Client
	excerptMax int
	now        func() time.Time
}

// NewPoster returns a Poster whose connections pass guard at connect time.
// It never follows redirects.
func NewPoster(guard Guard, excerptMax int, now func() time.Time) *Poster {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: guard.control}
	transport := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &Poster{
		client: &http.Client{
			Transport:     transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		excerptMax: excerptMax,
		now:        now,
	}
}

// Post makes one attempt. It never returns an error: every failure is part
// of the Result.
func (p *Poster) Post(ctx context.Context, req Request) Result {
	ctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	start := p.now()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, req.URL, bytes.NewReader(req.Body))
	if err != nil {
		return Result{Err: fmt.Errorf("build request: %w", err)}
	}
	contentType := req.ContentType
	if contentType == "" {
		contentType = "application/json"
	}
	hreq.Header.Set("Content-Type", contentType)
	hreq.Header.Set("User-Agent", "Sluice/1")
	for _, hs := range req.Headers {
		for k, v := range hs {
			hreq.Header.Set(k, v)
		}
	}
	ts := start.Unix()
	hreq.Header.Set(HeaderID, req.ID)
	hreq.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	sigs := make([]string, len(req.Signers))
	for i, s := range req.Signers {
		sigs[i] = s.Sign(req.ID, ts, req.Body)
	}
	hreq.Header.Set(HeaderSignature, strings.Join(sigs, " "))

	resp, err := p.client.Do(hreq)
	if err != nil {
		res := Result{Latency: p.now().Sub(start), Err: err}
		if errors.Is(err, context.DeadlineExceeded) {
			res.Err = fmt.Errorf("timeout after %s: %w", req.Timeout, err)
		}
		return res
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, int64(p.excerptMax)))
	// Drain a little more so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	res := Result{StatusCode: resp.StatusCode, Latency: p.now().Sub(start), Excerpt: excerpt}
	for _, h := range KeptResponseHeaders {
		if v := resp.Header.Get(h); v != "" {
			if res.ResponseHeaders == nil {
				res.ResponseHeaders = make(map[string]string)
			}
			res.ResponseHeaders[h] = v
		}
	}
	return res
}

// Close releases idle connections.
func (p *Poster) Close() { p.client.CloseIdleConnections() }
