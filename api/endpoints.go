package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/tenancy"
)

// EndpointStore keeps endpoints in the config topic; tenancy.Directory
// implements it. An endpoint's settings are written by the API only; the
// health delivery records (failure run, automatic disable) is kept apart
// and folded in.
type EndpointStore interface {
	// Endpoint returns a tenant's endpoint in effect (settings with
	// health applied) or an error wrapping tenancy.ErrUnknownEndpoint.
	Endpoint(tenantID, endpointID string) (*eventv1.EndpointConfig, error)
	// EndpointSettings returns the endpoint's settings as last written,
	// what an update starts from.
	EndpointSettings(tenantID, endpointID string) (*eventv1.EndpointConfig, error)
	Endpoints(tenantID string) []*eventv1.EndpointConfig
	// EndpointRecord is the config record that stores cfg as settings,
	// for a transaction of the caller's.
	EndpointRecord(cfg *eventv1.EndpointConfig, actor *eventv1.Actor, now time.Time) (*kgo.Record, error)
	// PutEndpoint stores cfg and returns once this node sees it.
	PutEndpoint(ctx context.Context, cfg *eventv1.EndpointConfig, actor *eventv1.Actor, now time.Time) error
	DeleteEndpoint(ctx context.Context, tenantID, endpointID string) error
	// Sync waits until this node sees everything committed before.
	Sync(ctx context.Context) error
}

// DefaultSecretOverlap is how long RotateSecret keeps the previous secret
// signing when the request names no overlap.
const DefaultSecretOverlap = 24 * time.Hour

// MaxPreviousSecrets is how many earlier secrets an endpoint keeps signing
// with during their overlaps: rotating again drops the oldest.
const MaxPreviousSecrets = 3

// EndpointService implements sluice.v1.EndpointService.
type EndpointService struct {
	store  EndpointStore
	jobs   JobStore
	log    Appender
	topics eventlog.Topics
	limits Limits
	now    func() time.Time
	logger *slog.Logger
}

var _ sluicev1connect.EndpointServiceHandler = (*EndpointService)(nil)

var eventTypePattern = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,128}$`)

// CreateEndpoint validates and stores a new endpoint.
func (s *EndpointService) CreateEndpoint(ctx context.Context, req *connect.Request[sluicev1.CreateEndpointRequest]) (*connect.Response[sluicev1.CreateEndpointResponse], error) {
	p, m, now := principalFrom(ctx), req.Msg, s.now()
	secret := m.Secret
	if secret == "" {
		secret = tenancy.NewSigningSecret()
	}
	ep := &sluicev1.Endpoint{
		Id: "ep_" + eventlog.NewID(), Url: m.Url, Description: m.Description, EventTypes: m.EventTypes,
		Secret: secret, Headers: m.Headers, RateLimit: m.RateLimit, ConcurrencyLimit: m.ConcurrencyLimit,
		CreatedAt: timestamppb.New(now), UpdatedAt: timestamppb.New(now),
	}
	if m.Disabled {
		ep.Disabled, ep.DisabledReason, ep.DisabledAt = true, "created disabled", timestamppb.New(now)
	}
	if cerr := validateEndpoint(ep); cerr != nil {
		return nil, cerr
	}
	cfg := &eventv1.EndpointConfig{
		TenantId: p.TenantID, Endpoint: ep, Secrets: []*eventv1.EndpointSecret{{Secret: secret}}, EnableId: tenancy.NewEnableID(),
	}
	if err := s.store.PutEndpoint(ctx, cfg, apiActor(p), now); err != nil {
		return nil, s.unavailable(ctx, "store endpoint", err)
	}
	return connect.NewResponse(&sluicev1.CreateEndpointResponse{Endpoint: publicEndpoint(cfg, now)}), nil
}

// GetEndpoint returns one endpoint.
func (s *EndpointService) GetEndpoint(ctx context.Context, req *connect.Request[sluicev1.GetEndpointRequest]) (*connect.Response[sluicev1.GetEndpointResponse], error) {
	cfg, err := s.endpoint(ctx, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&sluicev1.GetEndpointResponse{Endpoint: publicEndpoint(cfg, s.now())}), nil
}

// ListEndpoints lists the tenant's endpoints, oldest first.
func (s *EndpointService) ListEndpoints(ctx context.Context, _ *connect.Request[sluicev1.ListEndpointsRequest]) (*connect.Response[sluicev1.ListEndpointsResponse], error) {
	now := s.now()
	resp := &sluicev1.ListEndpointsResponse{}
	for _, cfg := range s.store.Endpoints(principalFrom(ctx).TenantID) {
		resp.Endpoints = append(resp.Endpoints, publicEndpoint(cfg, now))
	}
	return connect.NewResponse(resp), nil
}

// UpdateEndpoint changes the fields the request sets. Enabling a disabled
// endpoint (by the API or automatically) appends endpoint.enabled and
// starts it afresh; disabling appends endpoint.disabled. The event and the
// new settings are one transaction.
func (s *EndpointService) UpdateEndpoint(ctx context.Context, req *connect.Request[sluicev1.UpdateEndpointRequest]) (*connect.Response[sluicev1.UpdateEndpointResponse], error) {
	p, m, now := principalFrom(ctx), req.Msg, s.now()
	current, err := s.endpoint(ctx, m.Id)
	if err != nil {
		return nil, err
	}
	settings, err := s.settings(ctx, m.Id)
	if err != nil {
		return nil, err
	}
	cfg := proto.CloneOf(settings)
	ep := cfg.Endpoint
	if m.Url != nil {
		ep.Url = *m.Url
	}
	if m.Description != nil {
		ep.Description = *m.Description
	}
	if m.EventTypes != nil {
		ep.EventTypes = m.EventTypes.Types
	}
	if m.Headers != nil {
		ep.Headers = m.Headers.Values
	}
	if m.RateLimit != nil {
		ep.RateLimit = *m.RateLimit
	}
	if m.ConcurrencyLimit != nil {
		ep.ConcurrencyLimit = *m.ConcurrencyLimit
	}
	var change any
	switch {
	case m.Disabled == nil || *m.Disabled == current.GetEndpoint().GetDisabled():
	case *m.Disabled:
		reason := m.DisabledReason
		if reason == "" {
			reason = "disabled by API"
		}
		ep.Disabled, ep.DisabledReason, ep.DisabledAt = true, reason, timestamppb.New(now)
		change = &eventv1.EndpointDisabled{EndpointId: ep.Id, Reason: reason}
	default:
		ep.Disabled, ep.DisabledReason, ep.DisabledAt = false, "", nil
		// A fresh start: the failure run and any automatic disable
		// recorded under the previous enable no longer apply.
		cfg.FailingSince, cfg.EnableId = nil, tenancy.NewEnableID()
		change = &eventv1.EndpointEnabled{EndpointId: ep.Id}
	}
	ep.UpdatedAt = timestamppb.New(now)
	if cerr := validateEndpoint(ep); cerr != nil {
		return nil, cerr
	}
	cr, err := s.store.EndpointRecord(cfg, apiActor(p), now)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	recs := []*kgo.Record{cr}
	if change != nil {
		rec, err := eventlog.EncodeEndpointEvent(s.topics.Events(), ep.Id, eventlog.NewEvent(eventlog.Meta{
			TenantID: p.TenantID, OccurredAt: now, Actor: apiActor(p),
		}, change))
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		recs = append(recs, rec)
	}
	if err := s.log.AppendAtomic(ctx, recs); err != nil {
		return nil, s.unavailable(ctx, "store endpoint", err)
	}
	if err := s.store.Sync(ctx); err != nil {
		return nil, s.unavailable(ctx, "read back endpoint", err)
	}
	return connect.NewResponse(&sluicev1.UpdateEndpointResponse{Endpoint: s.folded(p.TenantID, cfg, now)}), nil
}

// folded is the endpoint as the API shows it once cfg, its new settings,
// is stored: with the health delivery recorded applied.
func (s *EndpointService) folded(tenantID string, cfg *eventv1.EndpointConfig, now time.Time) *sluicev1.Endpoint {
	if cur, err := s.store.Endpoint(tenantID, cfg.GetEndpoint().GetId()); err == nil {
		return publicEndpoint(cur, now)
	}
	return publicEndpoint(cfg, now) // deleted meanwhile
}

// DeleteEndpoint removes an endpoint; its waiting messages die when their
// attempt comes.
func (s *EndpointService) DeleteEndpoint(ctx context.Context, req *connect.Request[sluicev1.DeleteEndpointRequest]) (*connect.Response[sluicev1.DeleteEndpointResponse], error) {
	if _, err := s.endpoint(ctx, req.Msg.Id); err != nil {
		return nil, err
	}
	if err := s.store.DeleteEndpoint(ctx, principalFrom(ctx).TenantID, req.Msg.Id); err != nil {
		return nil, s.unavailable(ctx, "delete endpoint", err)
	}
	return connect.NewResponse(&sluicev1.DeleteEndpointResponse{}), nil
}

// RotateSecret makes a new secret current; the previous current secret
// keeps signing for the overlap. At most MaxPreviousSecrets earlier
// secrets keep signing: the oldest beyond them is dropped at once.
func (s *EndpointService) RotateSecret(ctx context.Context, req *connect.Request[sluicev1.RotateSecretRequest]) (*connect.Response[sluicev1.RotateSecretResponse], error) {
	p, m, now := principalFrom(ctx), req.Msg, s.now()
	old, err := s.settings(ctx, m.Id)
	if err != nil {
		return nil, err
	}
	overlap := DefaultSecretOverlap
	if m.Overlap != nil {
		if err := m.Overlap.CheckValid(); err != nil || m.Overlap.AsDuration() < 0 || m.Overlap.AsDuration() > 30*24*time.Hour {
			return nil, fieldError(connect.CodeInvalidArgument, "overlap", "must be between 0s and 720h")
		}
		overlap = m.Overlap.AsDuration()
	}
	secret := m.Secret
	if secret == "" {
		secret = tenancy.NewSigningSecret()
	} else if cerr := validateSecret(secret, "secret"); cerr != nil {
		return nil, cerr
	}
	cfg := proto.CloneOf(old)
	secrets := []*eventv1.EndpointSecret{{Secret: secret}}
	for i, sec := range cfg.Secrets {
		if exp := sec.GetExpiresAt(); exp != nil && !now.Before(exp.AsTime()) {
			continue // expired: dropped
		}
		if i == 0 {
			sec.ExpiresAt = timestamppb.New(now.Add(overlap))
			if overlap == 0 {
				continue
			}
		}
		secrets = append(secrets, sec)
	}
	cfg.Secrets = secrets[:min(len(secrets), 1+MaxPreviousSecrets)] // newest first
	cfg.Endpoint.Secret = secret
	cfg.Endpoint.UpdatedAt = timestamppb.New(now)
	if err := s.store.PutEndpoint(ctx, cfg, apiActor(p), now); err != nil {
		return nil, s.unavailable(ctx, "store endpoint", err)
	}
	return connect.NewResponse(&sluicev1.RotateSecretResponse{Endpoint: s.folded(p.TenantID, cfg, now)}), nil
}

// SendMessage enqueues one delivery job per enabled endpoint subscribed to
// the message's event type, in one transaction. With an idempotency key
// the job ids derive from (tenant, key, endpoint), so a repeat creates
// nothing new: the first job.enqueued of an id wins.
func (s *EndpointService) SendMessage(ctx context.Context, req *connect.Request[sluicev1.SendMessageRequest]) (*connect.Response[sluicev1.SendMessageResponse], error) {
	p, m, now := principalFrom(ctx), req.Msg, s.now()
	switch {
	case m.EventType == "":
		return nil, fieldError(connect.CodeInvalidArgument, "eventType", "required")
	case !eventTypePattern.MatchString(m.EventType):
		return nil, fieldError(connect.CodeInvalidArgument, "eventType", "%q: use 1-128 of A-Z a-z 0-9 . _ : / -", m.EventType)
	case m.Payload == nil:
		return nil, fieldError(connect.CodeInvalidArgument, "payload", "required (any JSON value; null is fine)")
	case len(m.IdempotencyKey) > 256:
		return nil, fieldError(connect.CodeInvalidArgument, "idempotencyKey", "%d characters, at most 256", len(m.IdempotencyKey))
	case m.Queue != "" && !queueName.MatchString(m.Queue):
		return nil, fieldError(connect.CodeInvalidArgument, "queue", "%q is not a queue name: use 1-128 of A-Z a-z 0-9 . _ -", m.Queue)
	}
	payload, cerr := s.limits.payload(m.Payload, "payload")
	if cerr != nil {
		return nil, cerr
	}
	msgID := eventlog.NewID()
	if m.IdempotencyKey != "" {
		msgID = eventlog.KeyedJobID(p.TenantID, "message/"+m.IdempotencyKey)
	}
	resp := &sluicev1.SendMessageResponse{MessageId: msgID}
	var recs []*kgo.Record
	var keyed []string // job ids derived from the idempotency key
	for _, cfg := range s.store.Endpoints(p.TenantID) {
		ep := cfg.GetEndpoint()
		if ep.GetDisabled() || !subscribed(ep.GetEventTypes(), m.EventType) {
			continue
		}
		queue := m.Queue
		if queue == "" {
			queue = ep.GetId()
		}
		jobID := eventlog.NewID()
		if m.IdempotencyKey != "" {
			jobID = eventlog.KeyedJobID(p.TenantID, m.IdempotencyKey+"/"+ep.GetId())
		}
		spec := &eventv1.JobSpec{
			Queue: queue, Payload: payload, IdempotencyKey: m.IdempotencyKey, CreatedAt: timestamppb.New(now),
			Target: &sluicev1.Target{Kind: &sluicev1.Target_EndpointId{EndpointId: ep.GetId()}},
		}
		rec, err := eventlog.EncodeEvent(s.topics.Events(), eventlog.NewEvent(eventlog.Meta{
			TenantID: p.TenantID, JobID: jobID, CausationID: msgID, OccurredAt: now, Actor: apiActor(p),
		}, &eventv1.JobEnqueued{Spec: spec}))
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		recs = append(recs, rec)
		resp.JobIds = append(resp.JobIds, jobID)
		resp.EndpointIds = append(resp.EndpointIds, ep.GetId())
		if m.IdempotencyKey != "" {
			keyed = append(keyed, jobID)
		}
	}
	if len(keyed) > 0 {
		// A repeat answers without appending; a racing repeat still
		// appends, and the first job.enqueued of each id wins.
		var err error
		if recs, resp, err = s.dropRepeats(ctx, p.TenantID, recs, resp); err != nil {
			return nil, err
		}
	}
	if len(recs) > 0 {
		if err := s.log.AppendAtomic(ctx, recs); err != nil {
			return nil, s.unavailable(ctx, "append message jobs", err)
		}
	}
	return connect.NewResponse(resp), nil
}

// dropRepeats leaves out the jobs of a keyed message that already exist.
func (s *EndpointService) dropRepeats(ctx context.Context, tenantID string, recs []*kgo.Record, resp *sluicev1.SendMessageResponse) ([]*kgo.Record, *sluicev1.SendMessageResponse, error) {
	var keep []*kgo.Record
	for i, id := range resp.JobIds {
		_, err := s.jobs.GetJob(ctx, tenantID, id)
		switch {
		case errors.Is(err, projections.ErrNotFound):
			keep = append(keep, recs[i])
		case err != nil:
			return nil, nil, s.unavailable(ctx, "read job", err)
		}
	}
	return keep, resp, nil
}

// subscribed reports whether an endpoint filtering on types receives
// eventType: an empty filter receives every type.
func subscribed(types []string, eventType string) bool {
	return len(types) == 0 || slices.Contains(types, eventType)
}

// endpoint returns the caller's endpoint in effect.
func (s *EndpointService) endpoint(ctx context.Context, id string) (*eventv1.EndpointConfig, error) {
	return s.lookup(ctx, id, s.store.Endpoint)
}

// settings returns the caller's endpoint's settings, without its health.
func (s *EndpointService) settings(ctx context.Context, id string) (*eventv1.EndpointConfig, error) {
	return s.lookup(ctx, id, s.store.EndpointSettings)
}

func (s *EndpointService) lookup(ctx context.Context, id string, get func(tenantID, endpointID string) (*eventv1.EndpointConfig, error)) (*eventv1.EndpointConfig, error) {
	if id == "" {
		return nil, fieldError(connect.CodeInvalidArgument, "id", "required")
	}
	cfg, err := get(principalFrom(ctx).TenantID, id)
	if errors.Is(err, tenancy.ErrUnknownEndpoint) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("endpoint %s not found", id))
	}
	if err != nil {
		return nil, s.unavailable(ctx, "read endpoint", err)
	}
	return cfg, nil
}

func (s *EndpointService) unavailable(ctx context.Context, op string, err error) error {
	s.logger.ErrorContext(ctx, op, "error", err)
	if ctx.Err() != nil {
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request cancelled before the log acknowledged it"))
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s failed; the request was not accepted, retry it", op))
}

// publicEndpoint is an endpoint as the API shows it.
func publicEndpoint(cfg *eventv1.EndpointConfig, now time.Time) *sluicev1.Endpoint {
	ep := proto.CloneOf(cfg.GetEndpoint())
	ep.PreviousSecretExpiresAt = nil
	for _, s := range cfg.GetSecrets()[min(1, len(cfg.GetSecrets())):] {
		if exp := s.GetExpiresAt(); exp != nil && now.Before(exp.AsTime()) {
			if ep.PreviousSecretExpiresAt == nil || exp.AsTime().After(ep.PreviousSecretExpiresAt.AsTime()) {
				ep.PreviousSecretExpiresAt = exp
			}
		}
	}
	return ep
}

func apiActor(p tenancy.Principal) *eventv1.Actor {
	return &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: p.KeyID}
}

// validateEndpoint checks an endpoint's fields, naming the first bad one.
func validateEndpoint(ep *sluicev1.Endpoint) *connect.Error {
	invalid := func(field, format string, args ...any) *connect.Error {
		return fieldError(connect.CodeInvalidArgument, field, format, args...)
	}
	u, err := url.Parse(ep.Url)
	switch {
	case ep.Url == "":
		return invalid("url", "required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return invalid("url", "%q is not an absolute http or https URL", ep.Url)
	case u.User != nil:
		return invalid("url", "must not carry credentials")
	case len(ep.Description) > 1024:
		return invalid("description", "%d characters, at most 1024", len(ep.Description))
	case len(ep.EventTypes) > 256:
		return invalid("eventTypes", "%d types, at most 256", len(ep.EventTypes))
	case ep.RateLimit < 0 || ep.RateLimit > 100000:
		return invalid("rateLimit", "%v is outside 0..100000 per second", ep.RateLimit)
	case ep.ConcurrencyLimit < 0 || ep.ConcurrencyLimit > 10000:
		return invalid("concurrencyLimit", "%d is outside 0..10000", ep.ConcurrencyLimit)
	}
	for i, t := range ep.EventTypes {
		if !eventTypePattern.MatchString(t) {
			return invalid(fmt.Sprintf("eventTypes[%d]", i), "%q: use 1-128 of A-Z a-z 0-9 . _ : / -", t)
		}
	}
	if cerr := validateSecret(ep.Secret, "secret"); cerr != nil {
		return cerr
	}
	for name, value := range ep.Headers {
		field := "headers[" + name + "]"
		switch {
		case !validHeaderName(name):
			return invalid(field, "not a valid header name")
		case reservedHeaders[strings.ToLower(name)] || strings.EqualFold(name, "content-type"):
			return invalid(field, "reserved; Sluice sets it")
		case strings.ContainsAny(value, "\r\n\x00"):
			return invalid(field, "value contains a control character")
		}
	}
	return nil
}

// validateSecret checks a Standard Webhooks secret: "whsec_" and the
// base64 of 24 to 64 bytes.
func validateSecret(secret, field string) *connect.Error {
	raw, ok := strings.CutPrefix(secret, tenancy.SecretPrefix)
	if !ok {
		return fieldError(connect.CodeInvalidArgument, field, "must start with %s", tenancy.SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return fieldError(connect.CodeInvalidArgument, field, "the part after %s is not base64", tenancy.SecretPrefix)
	}
	if len(key) < 24 || len(key) > 64 {
		return fieldError(connect.CodeInvalidArgument, field, "%d bytes of key, want 24 to 64", len(key))
	}
	return nil
}

// checkEndpointTarget answers not_found-free invalid_argument for a job
// whose endpoint target the tenant does not have.
func checkEndpointTarget(store EndpointStore, tenantID string, spec *eventv1.JobSpec, prefix string) *connect.Error {
	id := spec.GetTarget().GetEndpointId()
	if id == "" {
		return nil
	}
	if store != nil {
		if _, err := store.Endpoint(tenantID, id); err == nil {
			return nil
		}
	}
	return fieldError(connect.CodeInvalidArgument, prefix+"target.endpointId", "unknown endpoint %q", id)
}
