package retrytiers

import "time"

// Tiers are the delay lines, shortest first.
var Tiers = []time.Duration{
	time.Second, 5 * time.Second, 30 * time.Second,
	2 * time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour,
}

// Hop returns the tier a job due in remaining should wait in next: the
// largest tier no longer than remaining, or the shortest tier when
// remaining is shorter than every tier (the job then runs late by less than
// that tier, never early). ok is false when the job is due now.
func Hop(remaining time.Duration) (tier time.Duration, ok bool) {
	if remaining <= 0 {
		return 0, false
	}
	tier = Tiers[0]
	for _, t := range Tiers {
		if t <= remaining {
			tier = t
		}
	}
	return tier, true
}
