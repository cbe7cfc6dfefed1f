package delivery

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// EndpointSource resolves endpoint targets from the folded config; cmd
// wires the tenant directory.
type EndpointSource interface {
	// Endpoint returns a tenant's endpoint in effect (its settings with
	// its health applied), or false when it has none by that id. The
	// result is shared: delivery does not modify it.
	Endpoint(tenantID, endpointID string) (*eventv1.EndpointConfig, bool)
	// EndpointHealthRecord is the config record that stores h. Delivery
	// writes only health records, never an endpoint's settings, so it
	// cannot undo what the API changed meanwhile.
	EndpointHealthRecord(h *eventv1.EndpointHealth, actor *eventv1.Actor, now time.Time) (*kgo.Record, error)
	// EndpointEnableOffset is the config offset of the latest enable (or
	// delete) of an endpoint, and a channel closed at the next change.
	EndpointEnableOffset() (int64, <-chan struct{})
}

// endpointRun is what an attempt to an endpoint adds to its outcome.
type endpointRun struct {
	id string
	// parkNext parks the next attempt instead of timing it: the attempt
	// disabled the endpoint.
	parkNext bool
	// extra records go with the outcome: the endpoint's new health and
	// its endpoint.disabled event.
	extra []*kgo.Record
}

var deliveryActor = &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "delivery"}

// handleEndpoint runs an attempt to an endpoint target: the URL, secrets
// and headers are the endpoint's at attempt time. A disabled endpoint's
// attempt is parked; one the endpoint's protection holds back is deferred
// without counting.
func (d *Deliverer) handleEndpoint(ctx context.Context, rec *kgo.Record, ev *eventv1.Event, r run, id string) ([]*kgo.Record, error) {
	now := d.cfg.Now()
	var cfg *eventv1.EndpointConfig
	if d.cfg.Endpoints != nil {
		cfg, _ = d.cfg.Endpoints.Endpoint(ev.TenantId, id)
	}
	if cfg == nil {
		return d.outcome(rec, ev, r, now, Result{Err: fmt.Errorf("%w: %s was deleted", ErrUnknownEndpoint, id)})
	}
	ep := cfg.GetEndpoint()
	if ep.GetDisabled() {
		return d.park(rec, ev, r, id)
	}
	t, wait := d.protect.admit(ev.TenantId+"/"+id, cfg, now)
	if t == nil {
		d.cfg.Observer.Deferred(r.spec.Queue)
		return d.deferRunUntil(rec, ev, r, now.Add(wait))
	}
	host := fmt.Sprintf("%s/%d", hostOf(ep.GetUrl()), rec.Partition)
	slot := d.hosts.acquire(host)
	if slot == nil {
		d.protect.cancel(t)
		d.cfg.Observer.Deferred(r.spec.Queue)
		return d.deferRun(rec, ev, r)
	}
	started := d.cfg.Now()
	defer func() { d.hosts.release(host, slot, d.cfg.Now().Sub(started)) }()
	signers, err := endpointSigners(cfg, started)
	if err != nil {
		d.protect.cancel(t)
		return d.outcome(rec, ev, r, started, Result{Err: err})
	}
	res := d.poster.Post(ctx, Request{
		URL:         ep.GetUrl(),
		ID:          ev.JobId,
		ContentType: r.spec.GetContentType(),
		Body:        r.spec.Payload,
		Headers:     []map[string]string{ep.GetHeaders(), r.spec.Headers},
		Signers:     signers,
		Timeout:     d.timeout(r.spec),
	})
	if ctx.Err() != nil {
		d.protect.cancel(t)
		return nil, ctx.Err() // stopping: the attempt is repeated by the next owner
	}
	// The verdict is judged against the endpoint as it is now, not as it
	// was before the request: it may have been enabled, disabled or
	// deleted meanwhile.
	cur, _ := d.cfg.Endpoints.Endpoint(ev.TenantId, id)
	v := d.protect.finish(t, cur, res, d.cfg.Now())
	er, err := d.protectionRecords(rec, ev, id, cur, v)
	if err != nil {
		return nil, err
	}
	if cur.GetEndpoint().GetDisabled() {
		er.parkNext = true // disabled meanwhile: its message waits, it does not die
	}
	r.endpoint = er
	d.cfg.Logger.DebugContext(ctx, "delivered", "job_id", ev.JobId, "endpoint_id", id, "attempt", r.attempt,
		"status_code", res.StatusCode, "latency", res.Latency, "error", res.Err)
	return d.outcome(rec, ev, r, started, res)
}

// endpointSigners signs with every secret of the endpoint that still
// signs at now: the current one, and the previous ones while their
// rotation overlap lasts.
func endpointSigners(cfg *eventv1.EndpointConfig, now time.Time) ([]*Signer, error) {
	var signers []*Signer
	for _, s := range cfg.GetSecrets() {
		if exp := s.GetExpiresAt(); exp != nil && !now.Before(exp.AsTime()) {
			continue
		}
		signer, err := NewSigner(s.GetSecret())
		if err != nil {
			return nil, fmt.Errorf("secret of endpoint %s: %w", cfg.GetEndpoint().GetId(), err)
		}
		signers = append(signers, signer)
	}
	if len(signers) == 0 {
		return nil, fmt.Errorf("endpoint %s has no signing secret", cfg.GetEndpoint().GetId())
	}
	return signers, nil
}

// protectionRecords turns a verdict into the records that go with the
// attempt's outcome: the endpoint's new health (cur's, changed by the
// verdict), and for a disable its endpoint.disabled event.
func (d *Deliverer) protectionRecords(rec *kgo.Record, ev *eventv1.Event, id string, cur *eventv1.EndpointConfig, v verdict) (*endpointRun, error) {
	er := &endpointRun{id: id, parkNext: v.disable != ""}
	if cur == nil || (v.disable == "" && v.failingSince.IsZero() && !v.clearFailing) {
		return er, nil
	}
	now := d.cfg.Now()
	h := &eventv1.EndpointHealth{
		TenantId: ev.TenantId, EndpointId: id, EnableId: cur.GetEnableId(), FailingSince: cur.GetFailingSince(),
	}
	switch {
	case !v.failingSince.IsZero():
		h.FailingSince = timestamppb.New(v.failingSince)
	case v.clearFailing:
		h.FailingSince = nil
	}
	if v.disable != "" {
		h.Disabled, h.DisabledReason, h.DisabledAt = true, v.disable, timestamppb.New(now)
		disabled := eventlog.NewEvent(eventlog.Meta{
			TenantID: ev.TenantId, EventID: eventlog.DeriveID(rec, 10), CausationID: ev.EventId,
			OccurredAt: now, Actor: deliveryActor,
		}, &eventv1.EndpointDisabled{EndpointId: id, Reason: v.disable, Automatic: true})
		out, err := eventlog.EncodeEndpointEvent(d.cfg.Topics.Events(), id, disabled)
		if err != nil {
			return nil, err
		}
		er.extra = append(er.extra, out)
		d.cfg.Logger.Warn("endpoint disabled", "tenant_id", ev.TenantId, "endpoint_id", id, "reason", v.disable)
	}
	hr, err := d.cfg.Endpoints.EndpointHealthRecord(h, deliveryActor, now)
	if err != nil {
		return nil, err
	}
	er.extra = append(er.extra, hr)
	return er, nil
}
