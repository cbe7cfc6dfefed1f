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
	"time"
)

// Request is one delivery attempt to make.
type Request struct {
	URL     string
	ID      string // webhook-id: the job id, stable across attempts
	Body    []byte
	Headers map[string]string
	Signer  *Signer
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

// keptResponseHeaders are copied into the attempt event.
var keptResponseHeaders = []string{"Content-Type", "Retry-After", "Server", "X-Request-Id"}

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
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "Sluice/1")
	for k, v := range req.Headers {
		hreq.Header.Set(k, v)
	}
	ts := start.Unix()
	hreq.Header.Set(HeaderID, req.ID)
	hreq.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	hreq.Header.Set(HeaderSignature, req.Signer.Sign(req.ID, ts, req.Body))

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
	for _, h := range keptResponseHeaders {
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
