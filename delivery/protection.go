package delivery

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// ProtectionConfig configures how a delivery node protects each endpoint
// (and itself) from an endpoint that fails. Every limit is per node.
type ProtectionConfig struct {
	// BreakerFailures is how many attempts in a row must fail (no answer,
	// 5xx, 408 or 429) to open an endpoint's circuit breaker. While open,
	// its attempts are deferred without counting. Default 10.
	BreakerFailures int
	// BreakerOpenFor is how long an open breaker defers attempts before
	// it lets one probe through (half-open). A failed probe doubles it,
	// up to BreakerMaxOpenFor; a successful one closes the breaker.
	// Default 30s.
	BreakerOpenFor time.Duration
	// BreakerMaxOpenFor caps BreakerOpenFor's doubling. Default 10m.
	BreakerMaxOpenFor time.Duration
	// DisableAfter disables an endpoint whose attempts have all failed for
	// this long. Default 120h (5 days); negative never disables.
	DisableAfter time.Duration
	// DeferFor is how long an attempt waits when the endpoint's
	// concurrency limit is reached. Default 1s.
	DeferFor time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c ProtectionConfig) WithDefaults() ProtectionConfig {
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 10
	}
	if c.BreakerOpenFor == 0 {
		c.BreakerOpenFor = 30 * time.Second
	}
	if c.BreakerMaxOpenFor == 0 {
		c.BreakerMaxOpenFor = 10 * time.Minute
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = 120 * time.Hour
	}
	if c.DeferFor == 0 {
		c.DeferFor = time.Second
	}
	return c
}

// protector holds every endpoint's breaker, limits and failure run on
// this node.
type protector struct {
	cfg ProtectionConfig

	mu        sync.Mutex
	endpoints map[string]*endpointState // by "<tenant>/<endpoint id>"
}

type endpointState struct {
	failures     int       // attempts failed in a row (breaker failures)
	failingSince time.Time // first failure since the last success; zero while answering
	openUntil    time.Time // zero while the breaker is closed
	openFor      time.Duration
	probing      bool // the half-open probe is in flight
	inflight     int
	limiter      *rate.Limiter
	// enableID is the endpoint's enable the failure run belongs to; an
	// enable since (by the API, after a disable by anyone) starts the run
	// over.
	enableID string
	// disabledAt is when this node disabled the endpoint; it writes the
	// disable once, until the endpoint is enabled after it.
	disabledAt time.Time
	// failingRecorded and clearRecorded note a failing_since written to
	// the endpoint's health and not yet folded back.
	failingRecorded, clearRecorded bool
}

// follow starts the failure run over when the endpoint was enabled since
// the run began: a failure run, breaker or disable from before the enable
// no longer counts. Limits and attempts in flight carry over.
func (st *endpointState) follow(enableID string) {
	if enableID == st.enableID {
		return
	}
	st.enableID = enableID
	st.failures, st.failingSince, st.openUntil, st.openFor = 0, time.Time{}, time.Time{}, 0
	st.disabledAt, st.failingRecorded, st.clearRecorded = time.Time{}, false, false
}

func newProtector(cfg ProtectionConfig) *protector {
	return &protector{cfg: cfg, endpoints: make(map[string]*endpointState)}
}

// ticket is an admitted attempt.
type ticket struct {
	key   string
	st    *endpointState
	probe bool
}

// admit lets an attempt to endpoint key (whose config in effect is cfg)
// through, or says how long it must wait: the breaker is open, or the
// endpoint's rate or concurrency limit is reached.
func (p *protector) admit(key string, cfg *eventv1.EndpointConfig, now time.Time) (*ticket, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.endpoints[key]
	if st == nil {
		st = &endpointState{enableID: cfg.GetEnableId()}
		p.endpoints[key] = st
	}
	st.follow(cfg.GetEnableId())
	ep := cfg.GetEndpoint()
	t := &ticket{key: key, st: st}
	if !st.openUntil.IsZero() {
		if now.Before(st.openUntil) || st.probing {
			return nil, max(st.openUntil.Sub(now), p.cfg.DeferFor)
		}
		t.probe = true
	}
	if limit := int(ep.GetConcurrencyLimit()); limit > 0 && st.inflight >= limit {
		return nil, p.cfg.DeferFor
	}
	if r := ep.GetRateLimit(); r > 0 {
		if st.limiter == nil || st.limiter.Limit() != rate.Limit(r) {
			st.limiter = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
		}
		if !st.limiter.AllowN(now, 1) {
			return nil, max(time.Duration(float64(time.Second)/r), time.Second)
		}
	} else {
		st.limiter = nil
	}
	st.probing = st.probing || t.probe
	st.inflight++
	return t, 0
}

// cancel returns an admitted attempt that was not made.
func (p *protector) cancel(t *ticket) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t.st.inflight--
	if t.probe {
		t.st.probing = false
	}
}

// verdict is what an attempt's result means for its endpoint.
type verdict struct {
	// disable is why the endpoint must be disabled now; "" to keep it.
	disable string
	// failingSince, when set, is to be recorded in the endpoint's health
	// (with a disable: when the failure run that disabled it began).
	failingSince time.Time
	// clearFailing is set when the health's failing_since is to be
	// cleared.
	clearFailing bool
}

// finish records an attempt's result in its endpoint's state. cur is the
// endpoint's config in effect when the attempt ended, nil once deleted:
// its enable and recorded failure run count, and an endpoint disabled or
// deleted meanwhile gets no verdict.
func (p *protector) finish(t *ticket, cur *eventv1.EndpointConfig, res Result, now time.Time) verdict {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := t.st
	st.inflight--
	if t.probe {
		st.probing = false
	}
	var v verdict
	if cur == nil {
		return v
	}
	st.follow(cur.GetEnableId())
	var recorded *time.Time
	if fs := cur.GetFailingSince(); fs != nil {
		at := fs.AsTime()
		recorded = &at
	}
	if cur.GetEndpoint().GetDisabled() {
		// Disabled meanwhile (by the API or another node): nothing to
		// record; enabling it starts the run over.
		return v
	}
	if recorded != nil {
		st.failingRecorded = false // folded back
	} else {
		st.clearRecorded = false
	}
	if res.OK() {
		st.failures, st.failingSince, st.openUntil, st.openFor = 0, time.Time{}, time.Time{}, 0
		if recorded != nil && !st.clearRecorded {
			v.clearFailing, st.clearRecorded = true, true
		}
		return v
	}
	if st.failingSince.IsZero() {
		st.failingSince = now
	}
	if recorded != nil && recorded.Before(st.failingSince) {
		st.failingSince = *recorded
	}
	if breakerFailure(res) {
		st.failures++
		switch {
		case t.probe:
			st.openFor = min(2*st.openFor, p.cfg.BreakerMaxOpenFor)
			st.openUntil = now.Add(st.openFor)
		case st.openUntil.IsZero() && st.failures >= p.cfg.BreakerFailures:
			st.openFor = p.cfg.BreakerOpenFor
			st.openUntil = now.Add(st.openFor)
			if recorded == nil && !st.failingRecorded {
				v.failingSince, st.failingRecorded = st.failingSince, true
			}
		}
	}
	switch {
	case !st.disabledAt.IsZero():
	case res.StatusCode == http.StatusGone:
		v.disable = "the endpoint answered 410 Gone"
	case p.cfg.DisableAfter > 0 && now.Sub(st.failingSince) >= p.cfg.DisableAfter:
		v.disable = fmt.Sprintf("every delivery failed since %s", st.failingSince.UTC().Format(time.RFC3339))
	}
	if v.disable != "" {
		st.disabledAt, v.failingSince = now, st.failingSince
	}
	return v
}

// breakerFailure reports whether a failure says the endpoint is
// unavailable, rather than refusing one message.
func breakerFailure(res Result) bool {
	return res.StatusCode == 0 || res.StatusCode >= 500 ||
		res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusRequestTimeout
}
