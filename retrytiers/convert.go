package retrytiers

import (
	"time"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

// ForJob returns the policy a job asked for at enqueue, over the server
// default. The API validated the durations; unparsable ones fall back to
// the default.
func ForJob(spec *eventv1.JobSpec) Policy {
	p := DefaultPolicy()
	if n := spec.GetMaxAttempts(); n > 0 {
		p.MaxAttempts = int(n)
	}
	rp := spec.GetRetryPolicy()
	if rp == nil {
		return p
	}
	if e := rp.Exponential; e != nil {
		initial, err1 := time.ParseDuration(e.Initial)
		max, err2 := time.ParseDuration(e.Max)
		if err1 == nil && err2 == nil && e.Multiplier >= 1 {
			p.Exponential = &Exponential{Initial: initial, Multiplier: e.Multiplier, Max: max}
		}
		return p
	}
	if len(rp.Schedule) > 0 {
		schedule := make([]time.Duration, 0, len(rp.Schedule))
		for _, s := range rp.Schedule {
			d, err := time.ParseDuration(s)
			if err != nil {
				return p
			}
			schedule = append(schedule, d)
		}
		p.Schedule = schedule
	}
	return p
}
