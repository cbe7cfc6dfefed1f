// Package router turns the inbox's verified requests into jobs: each
// source routes by event type to queues and endpoints.
//
// # Guarantees
//
// The router runs as an eventlog.Runner handler on sluice.inbox: the
// job.enqueued events of a request are committed in one transaction with
// the inbox offset, so a crash or an outage of the router never loses a
// received request (it resumes from its committed offsets) and never
// routes one twice in effect. Job ids derive from the source, the
// provider's delivery id and the target (eventlog.KeyedJobID), so a
// repeated delivery, or a request handled again after a crash, names the
// jobs the first one created, and the first job.enqueued of an id wins.
//
// Routing reads the source's routes as they are when the request is
// routed, not when it was received.
package router

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/inbound/receiver"
	"github.com/sluicehq/sluice/inbound/sources"
	"github.com/sluicehq/sluice/inbound/verify"
	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// HeaderBodyEncoding is set on a queue job's headers when its payload is
// the base64 of a body that is neither JSON nor UTF-8 text.
const HeaderBodyEncoding = "sluice-body-encoding"

// Observer hears about routed requests; cmd turns it into metrics. Its
// methods must not block.
type Observer interface {
	// Routed reports a request and the number of jobs it became.
	Routed(sourceKind string, jobs int)
}

type nopObserver struct{}

func (nopObserver) Routed(string, int) {}

// Config configures a Router.
type Config struct {
	// Sources resolves source ids. Required.
	Sources receiver.Lookup
	// Topics names the events topic jobs are enqueued on. Required.
	Topics eventlog.Topics
	// Observer hears about routed requests. Default: none.
	Observer Observer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Router routes inbound requests.
type Router struct {
	cfg Config
}

// New returns a Router.
func New(cfg Config) (*Router, error) {
	var errs []error
	if cfg.Sources == nil {
		errs = append(errs, errors.New("router: Config.Sources: required"))
	}
	if cfg.Topics.Prefix == "" {
		errs = append(errs, errors.New("router: Config.Topics: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
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
	return &Router{cfg: cfg}, nil
}

// Handle routes one inbox record; it is the eventlog.Runner handler. A
// record that cannot be decoded, or whose source is gone, is logged and
// skipped: it stays in the inbox.
func (r *Router) Handle(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error) {
	req, err := receiver.Decode(rec)
	if err != nil {
		r.cfg.Logger.ErrorContext(ctx, "skip undecodable inbox record", "error", err)
		return nil, nil
	}
	n := 0
	return r.Route(ctx, req, Scope{}, func() string { n++; return eventlog.DeriveID(rec, n-1) })
}

// Scope sets apart the jobs of a replay from those of the first routing.
type Scope struct {
	// ReplayID is empty for the first routing.
	ReplayID string
}

func (s Scope) keyPrefix() string {
	if s.ReplayID == "" {
		return "inbound/"
	}
	return "inbound-replay/" + s.ReplayID + "/"
}

// Route returns the job.enqueued records of one request under its
// source's current routes. eventID names each event (NewID when nil).
func (r *Router) Route(ctx context.Context, req *eventv1.InboundRequest, scope Scope, eventID func() string) ([]*kgo.Record, error) {
	e, ok := r.cfg.Sources.Entry(req.SourceId)
	if !ok || e.TenantID != req.TenantId {
		r.cfg.Logger.WarnContext(ctx, "inbound request of a deleted source not routed",
			"source_id", req.SourceId, "request_id", req.RequestId)
		return nil, nil
	}
	if eventID == nil {
		eventID = eventlog.NewID
	}
	src := e.Source
	eventType := EventType(src, req)
	deliveryID := DeliveryID(src, req)
	if deliveryID == "" {
		deliveryID = "request/" + req.RequestId
	}
	base := scope.keyPrefix() + src.Id + "/" + deliveryID + "/"
	meta := eventlog.Meta{
		TenantID:    req.TenantId,
		CausationID: req.RequestId,
		Actor:       &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "router"},
		OccurredAt:  r.cfg.Now(),
	}
	var recs []*kgo.Record
	seen := make(map[string]bool)
	add := func(key string, spec *eventv1.JobSpec) error {
		if seen[key] {
			return nil
		}
		seen[key] = true
		spec.IdempotencyKey = key
		m := meta
		m.JobID, m.EventID = eventlog.KeyedJobID(req.TenantId, key), eventID()
		rec, err := eventlog.EncodeEvent(r.cfg.Topics.Events(), eventlog.NewEvent(m, &eventv1.JobEnqueued{Spec: spec}))
		if err != nil {
			return err
		}
		if size := len(rec.Key) + len(rec.Value); size > maxJobRecordBytes {
			// The log would refuse it, and the runner would offer it again
			// with every later outcome: routing would stop. The request
			// stays in the inbox, where a replay can pick it up.
			r.cfg.Logger.ErrorContext(ctx, "routed job too large for the log; skipped, the request stays in the inbox",
				"source_id", src.Id, "request_id", req.RequestId, "route", key, "bytes", size, "limit", maxJobRecordBytes)
			return nil
		}
		recs = append(recs, rec)
		return nil
	}
	for _, route := range src.Routes {
		if !Matches(route.EventTypes, eventType) {
			continue
		}
		if route.Queue != "" {
			if err := add(base+"queue/"+route.Queue, queueSpec(route.Queue, req)); err != nil {
				return nil, err
			}
		}
		for _, ep := range route.EndpointIds {
			if err := add(base+"endpoint/"+ep, endpointSpec(route, ep, req)); err != nil {
				return nil, err
			}
		}
	}
	if len(recs) == 0 {
		r.cfg.Logger.DebugContext(ctx, "inbound request matched no route",
			"source_id", src.Id, "request_id", req.RequestId, "event_type", eventType)
	}
	r.cfg.Observer.Routed(kindOf(e), len(recs))
	return recs, nil
}

func kindOf(e *sources.Entry) string {
	if e.Verifier == nil {
		return ""
	}
	return e.Verifier.Kind()
}

// maxJobRecordBytes is the largest job.enqueued record the router
// writes: the log's record limit less room for batch framing.
const maxJobRecordBytes = eventlog.MaxRecordBytes - 64<<10

// queueSpec is the job a queue route enqueues: the JSON body (or the body
// as a JSON string) with the request's headers.
func queueSpec(queue string, req *eventv1.InboundRequest) *eventv1.JobSpec {
	headers := make(map[string]string, len(req.Headers)+1)
	for _, h := range req.Headers {
		headers[strings.ToLower(h.Name)] = strings.Join(h.Values, ", ")
	}
	var payload []byte
	switch {
	case json.Valid(req.Body):
		payload = req.Body
	case utf8.Valid(req.Body):
		payload = jsonString(string(req.Body))
	default:
		payload = jsonString(base64.StdEncoding.EncodeToString(req.Body))
		headers[HeaderBodyEncoding] = "base64"
	}
	return &eventv1.JobSpec{
		Queue:     queue,
		Payload:   payload,
		Headers:   headers,
		CreatedAt: req.ReceivedAt,
	}
}

// jsonString encodes s as a JSON string without HTML escaping, which
// would turn each of < > & into six bytes.
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// endpointSpec is the job that forwards the body byte-exact to an
// endpoint, with its content type. Its queue is the route's, else the
// source id.
func endpointSpec(route *sluicev1.Route, endpointID string, req *eventv1.InboundRequest) *eventv1.JobSpec {
	queue := route.Queue
	if queue == "" {
		queue = req.SourceId
	}
	ct := header(req, "Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	return &eventv1.JobSpec{
		Queue:       queue,
		Payload:     req.Body,
		Target:      &sluicev1.Target{Kind: &sluicev1.Target_EndpointId{EndpointId: endpointID}},
		ContentType: ct,
		CreatedAt:   req.ReceivedAt,
	}
}

// Matches reports whether an event type matches a route's list: an empty
// list or "*" matches everything, "a.*" matches "a.b", anything else
// matches exactly.
func Matches(types []string, eventType string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		switch {
		case t == "*" || t == eventType:
			return true
		case strings.HasSuffix(t, ".*") && strings.HasPrefix(eventType, t[:len(t)-1]):
			return true
		}
	}
	return false
}

// EventType reads a request's event type: from the source's event-type
// header (X-GitHub-Event for GitHub sources), else from its JSON field
// ("type" for Stripe and Standard Webhooks sources). Empty when neither
// says.
func EventType(src *sluicev1.Source, req *eventv1.InboundRequest) string {
	name, field := src.EventTypeHeader, src.EventTypeField
	switch src.GetVerification().GetKind().(type) {
	case *sluicev1.Verification_Github:
		if name == "" {
			name = verify.HeaderGitHubEvent
		}
	case *sluicev1.Verification_Stripe, *sluicev1.Verification_StandardWebhooks:
		if field == "" {
			field = "type"
		}
	}
	if name != "" {
		if v := header(req, name); v != "" {
			return v
		}
	}
	if field != "" {
		return jsonField(req.Body, field)
	}
	return ""
}

// DeliveryID reads the provider's id of a delivery, which stays the same
// when the provider sends it again: the source's delivery-id header
// (X-GitHub-Delivery, webhook-id by default), or a Stripe event's "id".
func DeliveryID(src *sluicev1.Source, req *eventv1.InboundRequest) string {
	name := src.DeliveryIdHeader
	switch src.GetVerification().GetKind().(type) {
	case *sluicev1.Verification_Github:
		if name == "" {
			name = verify.HeaderGitHubDelivery
		}
	case *sluicev1.Verification_StandardWebhooks:
		if name == "" {
			name = verify.HeaderWebhookID
		}
	case *sluicev1.Verification_Stripe:
		if name == "" {
			return jsonField(req.Body, "id")
		}
	}
	if name == "" {
		return ""
	}
	return header(req, name)
}

// header returns the first value of a request header, names compared
// without case.
func header(req *eventv1.InboundRequest, name string) string {
	for _, h := range req.Headers {
		if strings.EqualFold(h.Name, name) && len(h.Values) > 0 {
			return h.Values[0]
		}
	}
	return ""
}

// jsonField returns a top-level string field of a JSON object body, or
// "" when the body is not one or the field is not a string.
func jsonField(body []byte, field string) string {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return ""
	}
	var s string
	if err := json.Unmarshal(obj[field], &s); err != nil {
		return ""
	}
	return s
}
