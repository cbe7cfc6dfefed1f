// Package receiver serves POST /in/{source_id}: it verifies a webhook
// request against its source and appends it, byte-exact, to sluice.inbox.
//
// # Guarantees
//
// A 2xx answer means the request is in the inbox, acknowledged by every
// in-sync replica (acks=all, idempotent producer): it survives the loss of
// any Sluice process and will be routed. A request that fails
// verification (401), names no source (404) or is too large (413) is never
// appended. A 503 means the log did not acknowledge in time: the request
// was not accepted, though its record may still land; the provider's retry
// then carries the same delivery id and is routed once. Repeated provider deliveries are appended again (the
// inbox is a faithful record of what arrived) and dropped by the router,
// whose job ids derive from the provider's delivery id.
package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/inbound/sources"
	"github.com/sluicehq/sluice/inbound/verify"
	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// DefaultMaxBodyBytes is the largest body accepted unless configured.
const DefaultMaxBodyBytes = 25 << 20

// Redacted replaces the value of a token-verified header in the inbox:
// the token is the source's secret.
const Redacted = "[verified token]"

// Lookup finds sources by id; sources.Catalog implements it.
type Lookup interface {
	Entry(id string) (*sources.Entry, bool)
}

// Appender appends records durably; eventlog.Appender implements it.
type Appender interface {
	Append(ctx context.Context, recs ...*kgo.Record) error
}

// Outcomes of a request, as reported to the Observer.
const (
	OutcomeAccepted      = "accepted"
	OutcomeUnknownSource = "unknown_source"
	OutcomeTooLarge      = "too_large"
	OutcomeUnverified    = "verification_failed"
	OutcomeUnavailable   = "unavailable"
	OutcomeBadRequest    = "bad_request"
	OutcomeMisconfigured = "source_misconfigured"
)

// Observer hears about every request; cmd turns it into metrics. Its
// methods must not block.
type Observer interface {
	// Received reports a request's outcome, its verification kind ("" for
	// an unknown source), body size and time to answer.
	Received(outcome, kind string, bodyBytes int, latency time.Duration)
}

type nopObserver struct{}

func (nopObserver) Received(string, string, int, time.Duration) {}

// Config configures a Receiver.
type Config struct {
	// Sources resolves source ids. Required.
	Sources Lookup
	// Log appends to the inbox. Required.
	Log Appender
	// Topic is the inbox topic. Required.
	Topic string
	// MaxBodyBytes is the largest body accepted; larger ones get 413.
	// Default DefaultMaxBodyBytes (25 MiB).
	MaxBodyBytes int64
	// AppendTimeout bounds the wait for the log's acknowledgement; past
	// it the request is answered 503 (the sender retries). Default 10s.
	AppendTimeout time.Duration
	// BodyTimeout bounds the time to read a body, so a sender that
	// trickles or stalls does not hold a connection and its buffer.
	// Default 60s.
	BodyTimeout time.Duration
	// Observer hears about requests. Default: none.
	Observer Observer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Receiver is the http.Handler of POST /in/{source_id}.
type Receiver struct {
	cfg Config
}

// New returns a Receiver.
func New(cfg Config) (*Receiver, error) {
	var errs []error
	if cfg.Sources == nil {
		errs = append(errs, errors.New("receiver: Config.Sources: required"))
	}
	if cfg.Log == nil {
		errs = append(errs, errors.New("receiver: Config.Log: required"))
	}
	if cfg.Topic == "" {
		errs = append(errs, errors.New("receiver: Config.Topic: required"))
	}
	if cfg.MaxBodyBytes < 0 || cfg.AppendTimeout < 0 {
		errs = append(errs, errors.New("receiver: Config.MaxBodyBytes, AppendTimeout: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.AppendTimeout == 0 {
		cfg.AppendTimeout = 10 * time.Second
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = time.Minute
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Receiver{cfg: cfg}, nil
}

// ServeHTTP verifies the request, appends it to the inbox and answers 202
// with its request id.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	outcome, kind, size := rc.serve(w, r)
	rc.cfg.Observer.Received(outcome, kind, size, time.Since(start))
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) (outcome, kind string, size int) {
	ctx := r.Context()
	id := r.PathValue("source_id")
	e, ok := rc.cfg.Sources.Entry(id)
	if !ok {
		answer(w, http.StatusNotFound, "unknown source")
		return OutcomeUnknownSource, "", 0
	}
	if e.Verifier == nil {
		rc.cfg.Logger.ErrorContext(ctx, "inbound request for a source whose verification settings are invalid", "source_id", id)
		answer(w, http.StatusUnauthorized, "the source cannot verify requests; fix its verification settings")
		return OutcomeMisconfigured, "", 0
	}
	kind = e.Verifier.Kind()
	// Not every ResponseWriter supports deadlines (tests' recorders); the
	// server's does.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(rc.cfg.BodyTimeout))
	body, status, err := rc.readBody(r)
	if err != nil {
		answer(w, status, err.Error())
		if status == http.StatusRequestEntityTooLarge {
			return OutcomeTooLarge, kind, len(body)
		}
		return OutcomeBadRequest, kind, len(body)
	}
	// Step 1: verify before anything is stored.
	receivedAt := rc.cfg.Now()
	if err := e.Verifier.Verify(r.Header, body, receivedAt); err != nil {
		rc.cfg.Logger.InfoContext(ctx, "inbound request failed verification", "source_id", id, "kind", kind, "error", err)
		answer(w, http.StatusUnauthorized, "verification failed: "+err.Error())
		return OutcomeUnverified, kind, len(body)
	}
	// Step 2: append to the inbox; answer only after acks=all.
	req := rc.inboundRequest(r, e, body, receivedAt)
	rec, err := Encode(rc.cfg.Topic, req)
	if err != nil {
		rc.cfg.Logger.ErrorContext(ctx, "encode inbound request", "source_id", id, "error", err)
		answer(w, http.StatusInternalServerError, "could not encode the request")
		return OutcomeUnavailable, kind, len(body)
	}
	appendCtx, cancel := context.WithTimeout(ctx, rc.cfg.AppendTimeout)
	err = rc.cfg.Log.Append(appendCtx, rec)
	cancel()
	if err != nil {
		if errors.Is(err, kerr.MessageTooLarge) {
			answer(w, http.StatusRequestEntityTooLarge, "the request is larger than the inbox accepts")
			return OutcomeTooLarge, kind, len(body)
		}
		rc.cfg.Logger.ErrorContext(ctx, "append inbound request to the inbox", "source_id", id, "error", err)
		w.Header().Set("Retry-After", "1")
		answer(w, http.StatusServiceUnavailable, "the request was not stored; retry it")
		return OutcomeUnavailable, kind, len(body)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]string{"requestId": req.RequestId})
	return OutcomeAccepted, kind, len(body)
}

// readBody reads the whole body, refusing more than MaxBodyBytes.
func (rc *Receiver) readBody(r *http.Request) ([]byte, int, error) {
	limit := rc.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes is larger than %d", r.ContentLength, limit)
	}
	var body []byte
	if r.ContentLength > 0 {
		// A declared length is a hint, not a promise: a client that
		// declares 25 MiB and sends nothing must not hold 25 MiB.
		body = make([]byte, 0, min(r.ContentLength, 1<<20))
	}
	buf := &sliceWriter{b: body}
	n, err := io.Copy(buf, io.LimitReader(r.Body, limit+1))
	switch {
	case err != nil:
		return nil, http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	case n > limit:
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body is larger than %d bytes", limit)
	}
	return buf.b, 0, nil
}

type sliceWriter struct{ b []byte }

func (s *sliceWriter) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// inboundRequest is what the inbox keeps of r.
func (rc *Receiver) inboundRequest(r *http.Request, e *sources.Entry, body []byte, receivedAt time.Time) *eventv1.InboundRequest {
	redact := ""
	if t, ok := e.Verifier.(verify.Token); ok {
		redact = http.CanonicalHeaderKey(t.Header)
	}
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	sort.Strings(names)
	headers := make([]*eventv1.HTTPHeader, 0, len(names))
	for _, name := range names {
		values := r.Header[name]
		if name == redact {
			values = []string{Redacted}
		}
		headers = append(headers, &eventv1.HTTPHeader{Name: name, Values: values})
	}
	return &eventv1.InboundRequest{
		RequestId:  eventlog.NewID(),
		TenantId:   e.TenantID,
		SourceId:   e.Source.Id,
		ReceivedAt: timestamppb.New(receivedAt),
		Method:     r.Method,
		Path:       r.URL.Path,
		RawQuery:   r.URL.RawQuery,
		Headers:    headers,
		Body:       body,
		RemoteAddr: r.RemoteAddr,
		Host:       r.Host,
		VerifiedBy: e.Verifier.Kind(),
	}
}

// Encode turns an inbound request into its inbox record, keyed by source
// id and stamped with the time it was received.
func Encode(topic string, req *eventv1.InboundRequest) (*kgo.Record, error) {
	value, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode inbound request %s: %w", req.RequestId, err)
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(req.SourceId),
		Value:     value,
		Timestamp: req.ReceivedAt.AsTime(),
		Headers:   []kgo.RecordHeader{{Key: eventlog.HeaderTenant, Value: []byte(req.TenantId)}},
	}, nil
}

// Decode reads the inbound request in an inbox record.
func Decode(rec *kgo.Record) (*eventv1.InboundRequest, error) {
	req := new(eventv1.InboundRequest)
	if err := proto.Unmarshal(rec.Value, req); err != nil {
		return nil, fmt.Errorf("decode inbound request at %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, err)
	}
	return req, nil
}

func answer(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, strings.TrimSpace(msg)+"\n")
}
