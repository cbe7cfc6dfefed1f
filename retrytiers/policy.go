package retrytiers

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultSchedule is the wait before attempts 2..8 of an HTTP job: attempts
// run at 0, 5s, 5m, 30m, 2h, 5h, 10h and 10h.
var DefaultSchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// DefaultMaxAttempts is the attempts a job gets when nothing says otherwise.
const DefaultMaxAttempts = 8

// DefaultJitter spreads waits by ±20 %.
const DefaultJitter = 0.2

// SlowDownFloor is the shortest wait after a 429 or a timeout.
const SlowDownFloor = 60 * time.Second

// Exponential is a backoff of Initial × Multiplier^(n-1), capped at Max.
type Exponential struct {
	Initial    time.Duration
	Multiplier float64
	Max        time.Duration
}

// Policy is how a job retries.
type Policy struct {
	// Schedule is the wait after attempt n at index n-1; its last entry
	// repeats. Ignored when Exponential is set.
	Schedule []time.Duration
	// Exponential, when set, replaces Schedule.
	Exponential *Exponential
	// MaxAttempts, including the first. Zero means DefaultMaxAttempts.
	MaxAttempts int
	// Jitter is the fraction a wait may move either way. Zero means none;
	// DefaultPolicy uses DefaultJitter.
	Jitter float64
}

// DefaultPolicy is the server default for HTTP targets.
func DefaultPolicy() Policy {
	return Policy{Schedule: DefaultSchedule, MaxAttempts: DefaultMaxAttempts, Jitter: DefaultJitter}
}

// Failure is what went wrong in one attempt.
type Failure struct {
	// StatusCode of the answer; 0 when none arrived.
	StatusCode int
	// Timeout is set when the attempt ran out of time.
	Timeout bool
	// RetryAfter is the target's Retry-After header, raw; "" when absent.
	RetryAfter string
	// NotRetryable is a worker's Fail{retryable: false}.
	NotRetryable bool
}

// Decision is what follows a failed attempt.
type Decision struct {
	// Dead is set when no attempt follows.
	Dead bool
	// Reason says why the job is dead.
	Reason string
	// Wait before the next attempt, when not dead.
	Wait time.Duration
}

// Decide returns what follows the failed attempt number attempt (1-based).
// rand returns a number in [0, 1) and drives the jitter.
func (p Policy) Decide(attempt int, f Failure, now time.Time, rand func() float64) Decision {
	if reason, permanent := Permanent(f); permanent {
		return Decision{Dead: true, Reason: reason}
	}
	max := p.MaxAttempts
	if max == 0 {
		max = DefaultMaxAttempts
	}
	if attempt >= max {
		return Decision{Dead: true, Reason: fmt.Sprintf("attempts exhausted: %d of %d failed", attempt, max)}
	}
	nominal := p.Nominal(attempt)
	wait := jitter(nominal, p.Jitter, rand)
	if ra, ok := ParseRetryAfter(f.RetryAfter, now); ok {
		wait = min(max64(ra, wait), 2*wait)
	}
	if f.StatusCode == http.StatusTooManyRequests || f.Timeout {
		wait = max64(wait, SlowDownFloor)
	}
	return Decision{Wait: wait}
}

// Nominal is the wait after attempt n before jitter.
func (p Policy) Nominal(attempt int) time.Duration {
	if e := p.Exponential; e != nil {
		d := float64(e.Initial) * math.Pow(e.Multiplier, float64(attempt-1))
		if e.Max > 0 && (d > float64(e.Max) || math.IsInf(d, 0) || math.IsNaN(d)) {
			return e.Max
		}
		return time.Duration(d)
	}
	s := p.Schedule
	if len(s) == 0 {
		s = DefaultSchedule
	}
	return s[min(attempt-1, len(s)-1)]
}

func jitter(d time.Duration, frac float64, rand func() float64) time.Duration {
	if frac <= 0 || rand == nil {
		return d
	}
	return time.Duration(float64(d) * (1 + frac*(2*rand()-1)))
}

func max64(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// Permanent reports whether a failure can never succeed on retry: a 410,
// any other 4xx but 408, 409, 425 and 429, or a worker's non-retryable
// failure.
func Permanent(f Failure) (reason string, permanent bool) {
	switch c := f.StatusCode; {
	case f.NotRetryable:
		return "failed as not retryable", true
	case c == http.StatusGone:
		return "permanent failure: HTTP 410 Gone", true
	case c >= 400 && c < 500 && c != http.StatusRequestTimeout && c != http.StatusConflict &&
		c != http.StatusTooEarly && c != http.StatusTooManyRequests:
		return fmt.Sprintf("permanent failure: HTTP %d", c), true
	}
	return "", false
}

// ParseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(30*24*3600))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max64(t.Sub(now), 0), true
	}
	return 0, false
}
