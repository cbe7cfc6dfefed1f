package retrytiers

import (
	"time"

	"github.com/sluicehq/sluice/log/eventlog"
)

// Tiers are the delay lines, shortest first.
var Tiers = eventlog.RetryTiers

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
