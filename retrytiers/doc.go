// Package retrytiers decides what follows a failed attempt: how long to
// wait, or that the job is dead. The policy is a pure function of the
// attempt, the failure and the time, so it is tested without Kafka.
//
// Waits are served by delay lines: one topic per tier (Tiers), every record
// in a tier waiting the same time, so arrival order is due order. A wait
// longer than every tier hops through the largest tier that fits until it
// is due (Hop).
package retrytiers
