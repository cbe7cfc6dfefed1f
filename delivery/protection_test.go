package delivery

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestBreakerOpensDefersAndProbes(t *testing.T) {
	t.Parallel()
	p := newProtector(ProtectionConfig{BreakerFailures: 3, BreakerOpenFor: 10 * time.Second}.WithDefaults())
	ep := &eventv1.EndpointConfig{Endpoint: &sluicev1.Endpoint{Id: "ep_1"}}
	now := time.Unix(1_000_000, 0)
	fail := Result{StatusCode: 503}
	for i := range 3 {
		tk, wait := p.admit("t/ep_1", ep, now)
		if tk == nil {
			t.Fatalf("attempt %d deferred by %s before the breaker opened", i+1, wait)
		}
		p.finish(tk, ep, fail, now)
	}
	// Open: attempts wait for the probe time, without counting.
	if tk, wait := p.admit("t/ep_1", ep, now.Add(time.Second)); tk != nil || wait != 9*time.Second {
		t.Fatalf("open breaker: got ticket %v wait %s, want none and 9s", tk != nil, wait)
	}
	// Half-open: one probe passes, others keep waiting.
	probe, _ := p.admit("t/ep_1", ep, now.Add(10*time.Second))
	if probe == nil || !probe.probe {
		t.Fatal("half-open breaker let no probe through")
	}
	if tk, _ := p.admit("t/ep_1", ep, now.Add(10*time.Second)); tk != nil {
		t.Fatal("half-open breaker let a second attempt through beside the probe")
	}
	// A failed probe reopens it for twice as long.
	p.finish(probe, ep, fail, now.Add(10*time.Second))
	if tk, wait := p.admit("t/ep_1", ep, now.Add(11*time.Second)); tk != nil || wait != 19*time.Second {
		t.Fatalf("after a failed probe: got ticket %v wait %s, want none and 19s", tk != nil, wait)
	}
	// A successful probe closes it.
	probe, _ = p.admit("t/ep_1", ep, now.Add(30*time.Second))
	if probe == nil {
		t.Fatal("no probe after the doubled wait")
	}
	p.finish(probe, ep, Result{StatusCode: 200}, now.Add(30*time.Second))
	for range 5 {
		tk, _ := p.admit("t/ep_1", ep, now.Add(31*time.Second))
		if tk == nil {
			t.Fatal("closed breaker deferred an attempt")
		}
		p.finish(tk, ep, Result{StatusCode: 200}, now.Add(31*time.Second))
	}
}

func TestBreakerIgnoresClientErrors(t *testing.T) {
	t.Parallel()
	p := newProtector(ProtectionConfig{BreakerFailures: 2}.WithDefaults())
	ep := &eventv1.EndpointConfig{Endpoint: &sluicev1.Endpoint{Id: "ep_1"}}
	now := time.Unix(1_000_000, 0)
	for range 5 {
		tk, _ := p.admit("k", ep, now)
		if tk == nil {
			t.Fatal("a 400 opened the breaker: a bad message is not an unavailable endpoint")
		}
		p.finish(tk, ep, Result{StatusCode: 400}, now)
	}
}

func TestAutoDisable(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	ep := &eventv1.EndpointConfig{Endpoint: &sluicev1.Endpoint{Id: "ep_1"}}
	t.Run("410", func(t *testing.T) {
		p := newProtector(ProtectionConfig{}.WithDefaults())
		tk, _ := p.admit("k", ep, now)
		if v := p.finish(tk, ep, Result{StatusCode: 410}, now); v.disable == "" {
			t.Fatal("a 410 did not disable the endpoint")
		}
		tk, _ = p.admit("k", ep, now)
		if v := p.finish(tk, ep, Result{StatusCode: 410}, now); v.disable != "" {
			t.Error("a second 410 disabled the endpoint again before the first disable was folded")
		}
	})
	t.Run("continuous failure", func(t *testing.T) {
		p := newProtector(ProtectionConfig{BreakerFailures: 1000, DisableAfter: time.Hour}.WithDefaults())
		for i, at := range []time.Duration{0, 30 * time.Minute, 59 * time.Minute} {
			tk, _ := p.admit("k", ep, now.Add(at))
			if v := p.finish(tk, ep, Result{Err: errors.New("refused")}, now.Add(at)); v.disable != "" {
				t.Fatalf("failure %d after %s disabled it, want only after 1h", i, at)
			}
		}
		tk, _ := p.admit("k", ep, now.Add(time.Hour))
		if v := p.finish(tk, ep, Result{StatusCode: 500}, now.Add(time.Hour)); v.disable == "" {
			t.Fatal("an hour of failures did not disable the endpoint")
		}
	})
	t.Run("recorded failing since counts", func(t *testing.T) {
		p := newProtector(ProtectionConfig{BreakerFailures: 1000, DisableAfter: time.Hour}.WithDefaults())
		recorded := &eventv1.EndpointConfig{Endpoint: ep.Endpoint, FailingSince: timestamppb.New(now.Add(-2 * time.Hour))}
		tk, _ := p.admit("k", recorded, now)
		if v := p.finish(tk, recorded, Result{StatusCode: 500}, now); v.disable == "" {
			t.Fatal("a failure run recorded two hours ago did not disable the endpoint")
		}
	})
	t.Run("success resets", func(t *testing.T) {
		p := newProtector(ProtectionConfig{BreakerFailures: 1000, DisableAfter: time.Hour}.WithDefaults())
		tk, _ := p.admit("k", ep, now)
		p.finish(tk, ep, Result{StatusCode: 500}, now)
		tk, _ = p.admit("k", ep, now.Add(50*time.Minute))
		p.finish(tk, ep, Result{StatusCode: 204}, now.Add(50*time.Minute))
		tk, _ = p.admit("k", ep, now.Add(70*time.Minute))
		if v := p.finish(tk, ep, Result{StatusCode: 500}, now.Add(70*time.Minute)); v.disable != "" {
			t.Fatal("a failure after a success disabled the endpoint")
		}
	})
}

func TestEndpointLimits(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	t.Run("concurrency", func(t *testing.T) {
		p := newProtector(ProtectionConfig{}.WithDefaults())
		ep := &eventv1.EndpointConfig{Endpoint: &sluicev1.Endpoint{Id: "ep_1", ConcurrencyLimit: 2}}
		a, _ := p.admit("k", ep, now)
		b, _ := p.admit("k", ep, now)
		if a == nil || b == nil {
			t.Fatal("attempts within the limit were deferred")
		}
		if c, wait := p.admit("k", ep, now); c != nil || wait != time.Second {
			t.Fatalf("third attempt at limit 2: ticket %v wait %s, want deferred 1s", c != nil, wait)
		}
		p.finish(a, ep, Result{StatusCode: 200}, now)
		if c, _ := p.admit("k", ep, now); c == nil {
			t.Fatal("a freed slot was not reused")
		}
	})
	t.Run("rate", func(t *testing.T) {
		p := newProtector(ProtectionConfig{}.WithDefaults())
		ep := &eventv1.EndpointConfig{Endpoint: &sluicev1.Endpoint{Id: "ep_1", RateLimit: 2}}
		admitted := 0
		for range 5 {
			if tk, _ := p.admit("k", ep, now); tk != nil {
				admitted++
				p.finish(tk, ep, Result{StatusCode: 200}, now)
			}
		}
		if admitted != 2 {
			t.Fatalf("admitted %d of 5 at once at 2/s, want 2", admitted)
		}
		if tk, _ := p.admit("k", ep, now.Add(time.Second)); tk == nil {
			t.Fatal("no attempt admitted a second later")
		}
	})
}

// TestEnableStartsFailureRunOver checks that an endpoint enabled again
// after a disable by another node or the API is not disabled again by
// the failure run from before.
func TestEnableStartsFailureRunOver(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	cfg := func(enableID string) *eventv1.EndpointConfig {
		return &eventv1.EndpointConfig{EnableId: enableID, Endpoint: &sluicev1.Endpoint{Id: "ep_1"}}
	}
	fail := Result{StatusCode: 503}
	t.Run("enabled between attempts", func(t *testing.T) {
		p := newProtector(ProtectionConfig{BreakerFailures: 1000, DisableAfter: time.Hour}.WithDefaults())
		tk, _ := p.admit("k", cfg("en_1"), now)
		p.finish(tk, cfg("en_1"), fail, now)
		// Another node disables it; the API enables it 2h later.
		tk, _ = p.admit("k", cfg("en_2"), now.Add(2*time.Hour))
		if v := p.finish(tk, cfg("en_2"), fail, now.Add(2*time.Hour)); v.disable != "" {
			t.Fatalf("first failure after the enable disabled it again: %s", v.disable)
		}
		tk, _ = p.admit("k", cfg("en_2"), now.Add(3*time.Hour))
		if v := p.finish(tk, cfg("en_2"), fail, now.Add(3*time.Hour)); v.disable == "" {
			t.Fatal("an hour of failures since the enable did not disable it")
		}
	})
	t.Run("enabled while an attempt was in flight", func(t *testing.T) {
		p := newProtector(ProtectionConfig{BreakerFailures: 1000, DisableAfter: time.Hour}.WithDefaults())
		tk, _ := p.admit("k", cfg("en_1"), now)
		p.finish(tk, cfg("en_1"), fail, now)
		tk, _ = p.admit("k", cfg("en_1"), now.Add(2*time.Hour))
		if v := p.finish(tk, cfg("en_2"), fail, now.Add(2*time.Hour)); v.disable != "" {
			t.Fatalf("an attempt ending after the enable disabled it with the run from before: %s", v.disable)
		}
	})
	t.Run("after this node disabled it", func(t *testing.T) {
		p := newProtector(ProtectionConfig{}.WithDefaults())
		tk, _ := p.admit("k", cfg("en_1"), now)
		if v := p.finish(tk, cfg("en_1"), Result{StatusCode: 410}, now); v.disable == "" {
			t.Fatal("a 410 did not disable it")
		}
		tk, _ = p.admit("k", cfg("en_2"), now.Add(time.Minute))
		if v := p.finish(tk, cfg("en_2"), Result{StatusCode: 410}, now.Add(time.Minute)); v.disable == "" {
			t.Fatal("a 410 after the enable did not disable it again")
		}
	})
	t.Run("disabled meanwhile", func(t *testing.T) {
		p := newProtector(ProtectionConfig{}.WithDefaults())
		tk, _ := p.admit("k", cfg("en_1"), now)
		disabled := cfg("en_1")
		disabled.Endpoint.Disabled = true
		if v := p.finish(tk, disabled, Result{StatusCode: 410}, now); v != (verdict{}) {
			t.Fatalf("verdict %+v for an endpoint disabled while its attempt was in flight, want none", v)
		}
	})
}
