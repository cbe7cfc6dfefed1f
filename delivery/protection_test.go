package delivery

import (
	"errors"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestBreakerOpensDefersAndProbes(t *testing.T) {
	t.Parallel()
	p := newProtector(ProtectionConfig{BreakerFailures: 3, BreakerOpenFor: 10 * time.Second}.WithDefaults())
	ep := &sluicev1.Endpoint{Id: "ep_1"}
	now := time.Unix(1_000_000, 0)
	fail := Result{StatusCode: 503}
	for i := range 3 {
		tk, wait := p.admit("t/ep_1", ep, now)
		if tk == nil {
			t.Fatalf("attempt %d deferred by %s before the breaker opened", i+1, wait)
		}
		p.finish(tk, nil, fail, now)
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
	p.finish(probe, nil, fail, now.Add(10*time.Second))
	if tk, wait := p.admit("t/ep_1", ep, now.Add(11*time.Second)); tk != nil || wait != 19*time.Second {
		t.Fatalf("after a failed probe: got ticket %v wait %s, want none and 19s", tk != nil, wait)
	}
	// A successful probe closes it.
	probe, _ = p.admit("t/ep_1", ep, now.Add(30*time.Second))
	if probe == nil {
		t.Fatal("no probe after the doubled wait")
	}
	p.finish(probe, nil, Result{StatusCode: 200}, now.Add(30*time.Second))
	for range 5 {
		tk, _ := p.admit("t/ep_1", ep, now.Add(31*time.Second))
		if tk == nil {
			t.Fatal("closed breaker deferred an attempt")
		}
		p.finish(tk, nil, Result{StatusCode: 200}, now.Add(31*time.Second))
	}
}

func TestBreakerIgnoresClientErrors(t *testing.T) {
	t.Parallel()
	p := newProtector(ProtectionConfig{BreakerFailures: 2}.WithDefaults())
	ep := &sluicev1.Endpoint{Id: "ep_1"}
	now := time.Unix(1_000_000, 0)
	for range 5 {
		tk, _ := p.admit("k", ep, now)
		if tk == nil {
			t.Fatal("a 400 opened the breaker: a bad message is not an unavailable endpoint")
		}
		p.finish(tk, nil, Result{StatusCode: 400}, now)
	}
}

func TestAutoDisable(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	ep := &sluicev1.Endpoint{Id: "ep_1"}
	t.Run("410", func(t *testing.T) {
		p := newProtector(ProtectionConfig{}.WithDefaults())
		tk, _ := p.admit("k", ep, now)
		if v := p.finish(tk, nil, Result{StatusCode: 410}, now); v.disable == "" {
			t.Fatal("a 410 did not disable the endpoint")
		}
		tk, _ = p.admit("k", ep, now)
		if v := p.finish(tk, nil, Result{StatusCode: 410}, now); v.disable != "" {
			t.Error("a second 410 disabled the endpoint again before the first disable was folded")
		}
	})
	t.Run("continuous failure", func(t *testing.T) {
		p := newProtector(ProtectionConfig{BreakerFailures: 1000, DisableAfter: time.Hour}.WithDefaults())
		for i, at := range []time.Duration{0, 30 * time.Minute, 59 * time.Minute} {
			tk, _ := p.admit("k", ep, now.Add(at))
			if v := p.finish(tk, nil, Result{Err: errors.New("refused")}, now.Add(at)); v.disable != "" {
				t.Fatalf("failure %d after %s disabled it, want only after 1h", i, at)
			}
		}
		tk, _ := p.admit("k", ep, now.Add(time.Hour))
		if v := p.finish(tk, nil, Result{StatusCode: 500}, now.Add(time.Hour)); v.disable == "" {
			t.Fatal("an hour of failures did not disable the endpoint")
		}
	})
	t.Run("recorded failing since counts", func(t *testing.T) {
		p := newProtector(ProtectionConfig{BreakerFailures: 1000, DisableAfter: time.Hour}.WithDefaults())
		since := now.Add(-2 * time.Hour)
		tk, _ := p.admit("k", ep, now)
		if v := p.finish(tk, &since, Result{StatusCode: 500}, now); v.disable == "" {
			t.Fatal("a failure run recorded two hours ago did not disable the endpoint")
		}
	})
	t.Run("success resets", func(t *testing.T) {
		p := newProtector(ProtectionConfig{BreakerFailures: 1000, DisableAfter: time.Hour}.WithDefaults())
		tk, _ := p.admit("k", ep, now)
		p.finish(tk, nil, Result{StatusCode: 500}, now)
		tk, _ = p.admit("k", ep, now.Add(50*time.Minute))
		p.finish(tk, nil, Result{StatusCode: 204}, now.Add(50*time.Minute))
		tk, _ = p.admit("k", ep, now.Add(70*time.Minute))
		if v := p.finish(tk, nil, Result{StatusCode: 500}, now.Add(70*time.Minute)); v.disable != "" {
			t.Fatal("a failure after a success disabled the endpoint")
		}
	})
}

func TestEndpointLimits(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	t.Run("concurrency", func(t *testing.T) {
		p := newProtector(ProtectionConfig{}.WithDefaults())
		ep := &sluicev1.Endpoint{Id: "ep_1", ConcurrencyLimit: 2}
		a, _ := p.admit("k", ep, now)
		b, _ := p.admit("k", ep, now)
		if a == nil || b == nil {
			t.Fatal("attempts within the limit were deferred")
		}
		if c, wait := p.admit("k", ep, now); c != nil || wait != time.Second {
			t.Fatalf("third attempt at limit 2: ticket %v wait %s, want deferred 1s", c != nil, wait)
		}
		p.finish(a, nil, Result{StatusCode: 200}, now)
		if c, _ := p.admit("k", ep, now); c == nil {
			t.Fatal("a freed slot was not reused")
		}
	})
	t.Run("rate", func(t *testing.T) {
		p := newProtector(ProtectionConfig{}.WithDefaults())
		ep := &sluicev1.Endpoint{Id: "ep_1", RateLimit: 2}
		admitted := 0
		for range 5 {
			if tk, _ := p.admit("k", ep, now); tk != nil {
				admitted++
				p.finish(tk, nil, Result{StatusCode: 200}, now)
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
