package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/inbound/router"
	"github.com/sluicehq/sluice/inbound/sources"
	"github.com/sluicehq/sluice/inbound/verify"
	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// Bounds of a source.
const (
	maxSourceNameBytes   = 200
	maxRoutes            = 64
	maxRouteEndpoints    = 64
	maxRouteEventTypes   = 64
	maxEventTypeBytes    = 256
	maxSourceFieldBytes  = 128
	maxReplayIDBytes     = 128
	maxReplayRangeLength = 31 * 24 * time.Hour
)

var (
	replayIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	endpointIDChars = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// SourceStore keeps a tenant's inbound sources; sources.Catalog
// implements it.
type SourceStore interface {
	Get(tenantID, id string) (*sluicev1.Source, error)
	List(tenantID string) []*sluicev1.Source
	Put(ctx context.Context, tenantID string, src *sluicev1.Source, actor *eventv1.Actor, now time.Time) error
	Delete(ctx context.Context, tenantID, id string) error
}

// InboxReplayer routes a time range of a source's inbox again;
// router.Replayer implements it.
type InboxReplayer interface {
	Replay(ctx context.Context, tenantID, sourceID string, from, to time.Time, replayID string) (router.ReplayResult, error)
}

// SourceConfig enables the SourceService.
type SourceConfig struct {
	// Store keeps sources. The service is served only when it is set.
	Store SourceStore
	// Replayer serves ReplayInbox; when nil ReplayInbox answers
	// failed_precondition.
	Replayer InboxReplayer
	// PublicURL is where providers reach this server ("https://hooks.
	// example.com"); a source's ingestUrl is PublicURL + "/in/" + id.
	// Required with Store.
	PublicURL string
}

// SourceService implements sluice.v1.SourceService.
type SourceService struct {
	cfg SourceConfig
	// endpoints, when set, lets routes be checked against the tenant's
	// endpoints.
	endpoints EndpointStore
	now       func() time.Time
	logger    *slog.Logger
}

var _ sluicev1connect.SourceServiceHandler = (*SourceService)(nil)

// CreateSource validates and stores a new source.
func (s *SourceService) CreateSource(ctx context.Context, req *connect.Request[sluicev1.CreateSourceRequest]) (*connect.Response[sluicev1.CreateSourceResponse], error) {
	p := principalFrom(ctx)
	m := req.Msg
	now := s.now()
	src := &sluicev1.Source{
		Id:               sources.NewID(),
		Name:             m.Name,
		Verification:     m.Verification,
		Routes:           m.Routes,
		EventTypeHeader:  m.EventTypeHeader,
		EventTypeField:   m.EventTypeField,
		DeliveryIdHeader: m.DeliveryIdHeader,
		CreatedAt:        timestamppb.New(now),
		UpdatedAt:        timestamppb.New(now),
	}
	if err := s.validate(p.TenantID, src); err != nil {
		return nil, err
	}
	if err := s.cfg.Store.Put(ctx, p.TenantID, src, sourceActor(p.KeyID), now); err != nil {
		return nil, s.unavailable(ctx, "store source", err)
	}
	return connect.NewResponse(&sluicev1.CreateSourceResponse{Source: s.present(src)}), nil
}

// GetSource returns one of the tenant's sources.
func (s *SourceService) GetSource(ctx context.Context, req *connect.Request[sluicev1.GetSourceRequest]) (*connect.Response[sluicev1.GetSourceResponse], error) {
	src, err := s.get(ctx, req.Msg.Id, "id")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&sluicev1.GetSourceResponse{Source: s.present(src)}), nil
}

// ListSources lists the tenant's sources by id.
func (s *SourceService) ListSources(ctx context.Context, _ *connect.Request[sluicev1.ListSourcesRequest]) (*connect.Response[sluicev1.ListSourcesResponse], error) {
	list := s.cfg.Store.List(principalFrom(ctx).TenantID)
	for i, src := range list {
		list[i] = s.present(src)
	}
	return connect.NewResponse(&sluicev1.ListSourcesResponse{Sources: list}), nil
}

// UpdateSource replaces a source's settings.
func (s *SourceService) UpdateSource(ctx context.Context, req *connect.Request[sluicev1.UpdateSourceRequest]) (*connect.Response[sluicev1.UpdateSourceResponse], error) {
	p := principalFrom(ctx)
	m := req.Msg
	old, err := s.get(ctx, m.Id, "id")
	if err != nil {
		return nil, err
	}
	now := s.now()
	src := &sluicev1.Source{
		Id:               old.Id,
		Name:             m.Name,
		Verification:     m.Verification,
		Routes:           m.Routes,
		EventTypeHeader:  m.EventTypeHeader,
		EventTypeField:   m.EventTypeField,
		DeliveryIdHeader: m.DeliveryIdHeader,
		CreatedAt:        old.CreatedAt,
		UpdatedAt:        timestamppb.New(now),
	}
	if err := s.validate(p.TenantID, src); err != nil {
		return nil, err
	}
	if err := s.cfg.Store.Put(ctx, p.TenantID, src, sourceActor(p.KeyID), now); err != nil {
		return nil, s.unavailable(ctx, "store source", err)
	}
	return connect.NewResponse(&sluicev1.UpdateSourceResponse{Source: s.present(src)}), nil
}

// DeleteSource removes a source.
func (s *SourceService) DeleteSource(ctx context.Context, req *connect.Request[sluicev1.DeleteSourceRequest]) (*connect.Response[sluicev1.DeleteSourceResponse], error) {
	src, err := s.get(ctx, req.Msg.Id, "id")
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Store.Delete(ctx, principalFrom(ctx).TenantID, src.Id); err != nil {
		return nil, s.unavailable(ctx, "delete source", err)
	}
	return connect.NewResponse(&sluicev1.DeleteSourceResponse{}), nil
}

// ReplayInbox routes a time range of a source's requests again.
func (s *SourceService) ReplayInbox(ctx context.Context, req *connect.Request[sluicev1.ReplayInboxRequest]) (*connect.Response[sluicev1.ReplayInboxResponse], error) {
	p := principalFrom(ctx)
	m := req.Msg
	src, err := s.get(ctx, m.SourceId, "sourceId")
	if err != nil {
		return nil, err
	}
	if m.From == nil {
		return nil, fieldError(connect.CodeInvalidArgument, "from", "required")
	}
	if err := m.From.CheckValid(); err != nil {
		return nil, fieldError(connect.CodeInvalidArgument, "from", "%v", err)
	}
	from, to := m.From.AsTime(), s.now()
	if m.To != nil {
		if err := m.To.CheckValid(); err != nil {
			return nil, fieldError(connect.CodeInvalidArgument, "to", "%v", err)
		}
		to = m.To.AsTime()
	}
	switch {
	case !from.Before(to):
		return nil, fieldError(connect.CodeInvalidArgument, "to", "must be after from")
	case to.Sub(from) > maxReplayRangeLength:
		return nil, fieldError(connect.CodeInvalidArgument, "from", "the range is longer than %s", maxReplayRangeLength)
	}
	replayID := m.ReplayId
	if replayID == "" {
		replayID = "rpl_" + eventlog.NewID()
	} else if !replayIDPattern.MatchString(replayID) {
		return nil, fieldError(connect.CodeInvalidArgument, "replayId", "want 1 to %d of A-Z a-z 0-9 . _ : -", maxReplayIDBytes)
	}
	if s.cfg.Replayer == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this node cannot replay the inbox"))
	}
	res, err := s.cfg.Replayer.Replay(ctx, p.TenantID, src.Id, from, to, replayID)
	if err != nil {
		s.logger.ErrorContext(ctx, "replay inbox", "source_id", src.Id, "replay_id", replayID, "error", err)
		return nil, connect.NewError(connect.CodeUnavailable,
			fmt.Errorf("replay %s stopped after %d jobs; retry with replayId %q to finish it", replayID, res.Jobs, replayID))
	}
	return connect.NewResponse(&sluicev1.ReplayInboxResponse{ReplayId: replayID, Requests: res.Requests, Jobs: res.Jobs}), nil
}

func (s *SourceService) get(ctx context.Context, id, field string) (*sluicev1.Source, error) {
	if id == "" {
		return nil, fieldError(connect.CodeInvalidArgument, field, "required")
	}
	src, err := s.cfg.Store.Get(principalFrom(ctx).TenantID, id)
	if errors.Is(err, sources.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("source %s not found", id))
	}
	if err != nil {
		return nil, s.unavailable(ctx, "read source", err)
	}
	return src, nil
}

// present is a source as the API shows it: with its ingest URL.
func (s *SourceService) present(src *sluicev1.Source) *sluicev1.Source {
	src.IngestUrl = strings.TrimRight(s.cfg.PublicURL, "/") + "/in/" + src.Id
	return src
}

func (s *SourceService) unavailable(ctx context.Context, op string, err error) error {
	s.logger.ErrorContext(ctx, op, "error", err)
	if ctx.Err() != nil {
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request cancelled before the log acknowledged it"))
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s failed; the request was not accepted, retry it", op))
}

func sourceActor(keyID string) *eventv1.Actor {
	return &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: keyID}
}

// validate checks a source's settings and, when this node knows the
// endpoints, that its routes name endpoints of the tenant.
func (s *SourceService) validate(tenantID string, src *sluicev1.Source) *connect.Error {
	if err := validateSource(src); err != nil {
		return err
	}
	if s.endpoints == nil {
		return nil
	}
	var errs []string
	for i, r := range src.Routes {
		for j, ep := range r.EndpointIds {
			if _, err := s.endpoints.Endpoint(tenantID, ep); err != nil {
				errs = append(errs, fmt.Sprintf("routes[%d].endpointIds[%d]: endpoint %s not found", i, j, ep))
			}
		}
	}
	if len(errs) > 0 {
		return connect.NewError(connect.CodeInvalidArgument, errors.New(strings.Join(errs, "; ")))
	}
	return nil
}

// validateSource reports every problem with a source's settings, each
// naming its field.
func validateSource(src *sluicev1.Source) *connect.Error {
	var errs []string
	bad := func(field, format string, args ...any) {
		errs = append(errs, field+": "+fmt.Sprintf(format, args...))
	}
	switch n := strings.TrimSpace(src.Name); {
	case n == "":
		bad("name", "required")
	case len(src.Name) > maxSourceNameBytes:
		bad("name", "longer than %d bytes", maxSourceNameBytes)
	}
	if _, err := verify.New(src.Verification, "verification"); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			errs = append(errs, line)
		}
	}
	for field, h := range map[string]string{"eventTypeHeader": src.EventTypeHeader, "deliveryIdHeader": src.DeliveryIdHeader} {
		if h != "" && !validHeaderName(h) {
			bad(field, "%q is not a header name", h)
		}
	}
	if len(src.EventTypeField) > maxSourceFieldBytes {
		bad("eventTypeField", "longer than %d bytes", maxSourceFieldBytes)
	}
	if len(src.Routes) > maxRoutes {
		bad("routes", "%d routes, at most %d", len(src.Routes), maxRoutes)
	}
	for i, r := range src.Routes {
		f := fmt.Sprintf("routes[%d]", i)
		if r == nil || r.Queue == "" && len(r.EndpointIds) == 0 {
			bad(f, "needs a queue or endpointIds")
			continue
		}
		if r.Queue != "" && !queueName.MatchString(r.Queue) {
			bad(f+".queue", "%q is not a queue name", r.Queue)
		}
		if len(r.EndpointIds) > maxRouteEndpoints {
			bad(f+".endpointIds", "%d endpoints, at most %d", len(r.EndpointIds), maxRouteEndpoints)
		}
		for j, ep := range r.EndpointIds {
			if !endpointIDChars.MatchString(ep) {
				bad(fmt.Sprintf("%s.endpointIds[%d]", f, j), "%q is not an endpoint id", ep)
			}
		}
		if len(r.EventTypes) > maxRouteEventTypes {
			bad(f+".eventTypes", "%d event types, at most %d", len(r.EventTypes), maxRouteEventTypes)
		}
		for j, t := range r.EventTypes {
			if t == "" || len(t) > maxEventTypeBytes || strings.ContainsAny(t, " \t\r\n") {
				bad(fmt.Sprintf("%s.eventTypes[%d]", f, j), "%q: want 1 to %d bytes without spaces", t, maxEventTypeBytes)
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return connect.NewError(connect.CodeInvalidArgument, errors.New(strings.Join(errs, "; ")))
}
