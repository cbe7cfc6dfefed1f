package retrytiers

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func fixed(r float64) func() float64 { return func() float64 { return r } }

func TestDecide(t *testing.T) {
	t.Parallel()
	def := DefaultPolicy()
	noJitter := Policy{Schedule: DefaultSchedule, MaxAttempts: 8}
	cases := []struct {
		name    string
		p       Policy
		attempt int
		f       Failure
		rand    float64
		dead    bool
		wait    time.Duration
	}{
		{"first failure waits 5s", noJitter, 1, Failure{StatusCode: 500}, 0.5, false, 5 * time.Second},
		{"second failure waits 5m", noJitter, 2, Failure{StatusCode: 503}, 0.5, false, 5 * time.Minute},
		{"seventh failure waits 10h", noJitter, 7, Failure{StatusCode: 500}, 0.5, false, 10 * time.Hour},
		{"eighth failure is dead", noJitter, 8, Failure{StatusCode: 500}, 0.5, true, 0},
		{"jitter low end", def, 1, Failure{StatusCode: 500}, 0, false, 4 * time.Second},
		{"jitter high end", def, 1, Failure{StatusCode: 500}, 1, false, 6 * time.Second},
		{"410 is dead at once", def, 1, Failure{StatusCode: http.StatusGone}, 0.5, true, 0},
		{"400 is dead", def, 1, Failure{StatusCode: 400}, 0.5, true, 0},
		{"404 is dead", def, 1, Failure{StatusCode: 404}, 0.5, true, 0},
		{"408 retries", noJitter, 1, Failure{StatusCode: 408}, 0.5, false, 5 * time.Second},
		{"409 retries", noJitter, 1, Failure{StatusCode: 409}, 0.5, false, 5 * time.Second},
		{"425 retries", noJitter, 1, Failure{StatusCode: 425}, 0.5, false, 5 * time.Second},
		{"429 waits at least 60s", noJitter, 1, Failure{StatusCode: 429}, 0.5, false, 60 * time.Second},
		{"timeout waits at least 60s", noJitter, 1, Failure{Timeout: true}, 0.5, false, 60 * time.Second},
		{"connection error retries", noJitter, 1, Failure{}, 0.5, false, 5 * time.Second},
		{"worker not retryable is dead", def, 1, Failure{NotRetryable: true}, 0.5, true, 0},
		{"Retry-After within range is honoured", noJitter, 2, Failure{StatusCode: 503, RetryAfter: "420"}, 0.5, false, 7 * time.Minute},
		{"Retry-After too long is clamped to 2x", noJitter, 2, Failure{StatusCode: 503, RetryAfter: "86400"}, 0.5, false, 10 * time.Minute},
		{"Retry-After too short is raised to the schedule", noJitter, 2, Failure{StatusCode: 503, RetryAfter: "1"}, 0.5, false, 5 * time.Minute},
		{"Retry-After date", noJitter, 2, Failure{StatusCode: 503, RetryAfter: now.Add(8 * time.Minute).Format(http.TimeFormat)}, 0.5, false, 8 * time.Minute},
		{"garbage Retry-After is ignored", noJitter, 1, Failure{StatusCode: 503, RetryAfter: "soon"}, 0.5, false, 5 * time.Second},
		{"429 with short Retry-After still waits 60s", noJitter, 1, Failure{StatusCode: 429, RetryAfter: "2"}, 0.5, false, 60 * time.Second},
		{"custom schedule repeats its last entry", Policy{Schedule: []time.Duration{time.Second, 3 * time.Second}, MaxAttempts: 5}, 4, Failure{StatusCode: 500}, 0.5, false, 3 * time.Second},
		{"max attempts 1 dies at once", Policy{MaxAttempts: 1}, 1, Failure{StatusCode: 500}, 0.5, true, 0},
		{"exponential", Policy{Exponential: &Exponential{Initial: time.Second, Multiplier: 2, Max: time.Minute}, MaxAttempts: 20}, 4, Failure{StatusCode: 500}, 0.5, false, 8 * time.Second},
		{"exponential capped", Policy{Exponential: &Exponential{Initial: time.Second, Multiplier: 2, Max: time.Minute}, MaxAttempts: 20}, 19, Failure{StatusCode: 500}, 0.5, false, time.Minute},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.p.Decide(c.attempt, c.f, now, fixed(c.rand))
			if got.Dead != c.dead {
				t.Fatalf("dead: got %v (%s), want %v", got.Dead, got.Reason, c.dead)
			}
			if got.Dead && got.Reason == "" {
				t.Error("dead without a reason")
			}
			if !got.Dead && got.Wait != c.wait {
				t.Errorf("wait: got %s, want %s", got.Wait, c.wait)
			}
		})
	}
}

// Property: whatever the failure and the dice, a retry never waits less
// than the schedule less its jitter, nor more than twice the jittered
// schedule or the slow-down floor.
func TestDecideBounds(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	p := DefaultPolicy()
	statuses := []int{0, 408, 409, 425, 429, 500, 502, 503, 504}
	for i := 0; i < 20000; i++ {
		attempt := 1 + r.IntN(7)
		f := Failure{StatusCode: statuses[r.IntN(len(statuses))], Timeout: r.IntN(5) == 0}
		if r.IntN(3) == 0 {
			f.RetryAfter = strconv.FormatInt(r.Int64N(48*3600), 10)
		}
		d := p.Decide(attempt, f, now, r.Float64)
		if d.Dead {
			t.Fatalf("attempt %d %+v: dead (%s), want a retry", attempt, f, d.Reason)
		}
		nominal := p.Nominal(attempt)
		lo := time.Duration(float64(nominal) * (1 - DefaultJitter))
		hi := max(2*time.Duration(float64(nominal)*(1+DefaultJitter)), SlowDownFloor)
		if d.Wait < lo || d.Wait > hi {
			t.Fatalf("attempt %d %+v: wait %s outside [%s, %s]", attempt, f, d.Wait, lo, hi)
		}
		if (f.StatusCode == 429 || f.Timeout) && d.Wait < SlowDownFloor {
			t.Fatalf("attempt %d %+v: wait %s below the 60s floor", attempt, f, d.Wait)
		}
	}
}

// Property: the nominal schedule never decreases from one attempt to the
// next.
func TestNominalNeverDecreases(t *testing.T) {
	t.Parallel()
	for _, p := range []Policy{DefaultPolicy(), {Exponential: &Exponential{Initial: time.Second, Multiplier: 1.5, Max: time.Hour}}} {
		prev := time.Duration(0)
		for a := 1; a < 200; a++ {
			d := p.Nominal(a)
			if d < prev {
				t.Fatalf("attempt %d: nominal %s below the previous %s", a, d, prev)
			}
			prev = d
		}
	}
}

func TestHop(t *testing.T) {
	t.Parallel()
	cases := []struct {
		remaining time.Duration
		tier      time.Duration
		ok        bool
	}{
		{0, 0, false},
		{-time.Second, 0, false},
		{300 * time.Millisecond, time.Second, true},
		{time.Second, time.Second, true},
		{4 * time.Second, time.Second, true},
		{5 * time.Second, 5 * time.Second, true},
		{90 * time.Second, 30 * time.Second, true},
		{5 * time.Hour, time.Hour, true},
		{30 * 24 * time.Hour, 6 * time.Hour, true},
	}
	for _, c := range cases {
		tier, ok := Hop(c.remaining)
		if tier != c.tier || ok != c.ok {
			t.Errorf("Hop(%s): got %s %v, want %s %v", c.remaining, tier, ok, c.tier, c.ok)
		}
	}
}
