// Package inbound holds the parts of Sluice that receive webhooks from
// other systems: verify (signature checks), sources (the tenant's sources,
// folded from the config topic), receiver (POST /in/{source_id}, which
// appends verified requests to sluice.inbox) and router (which turns inbox
// records into jobs).
package inbound
