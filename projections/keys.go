package projections

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// keys names the Redis keys of one Store; see the package doc for the
// layout. fold.lua builds the index and counter names from tenant() the
// same way.
type keys struct{ prefix string }

var escaper = strings.NewReplacer("%", "%25", ":", "%3A")

// escape makes s safe as one component of a key: it holds no ":".
func escape(s string) string { return escaper.Replace(s) }

func (k keys) epoch() string { return k.prefix + "epoch" }

func (k keys) checkpoint(topic string, partition int32) string {
	return k.prefix + "ckpt:" + topic + ":" + strconv.Itoa(int(partition))
}

// tenant is the start of every key of one tenant.
func (k keys) tenant(tenantID string) string { return k.prefix + "t:" + escape(tenantID) + ":" }

func (k keys) job(tenantID, jobID string) string {
	return k.tenant(tenantID) + "job:" + escape(jobID)
}

// attempts names the hash of a job's attempts: attempt number → the
// attempt's event.
func (k keys) attempts(tenantID, jobID string) string {
	return k.job(tenantID, jobID) + ":attempts"
}

// dlq names the sorted set listing a tenant's dead jobs by time of death,
// narrowed to a queue when queue is not empty.
func (k keys) dlq(tenantID, queue string) string {
	key := k.tenant(tenantID)
	if queue != "" {
		key += "q:" + escape(queue) + ":"
	}
	return key + "dlq"
}

// index names the sorted set listing a tenant's jobs, narrowed to a queue
// when queue is not empty and to a state when state is not unspecified.
func (k keys) index(tenantID, queue string, state sluicev1.JobState) string {
	key := k.tenant(tenantID)
	if queue != "" {
		key += "q:" + escape(queue) + ":"
	}
	if state != sluicev1.JobState_JOB_STATE_UNSPECIFIED {
		key += "s:" + stateName(state) + ":"
	}
	return key + "jobs"
}

// leases names the sorted set of every leased job: job hash key by
// lease expiry (Unix µs).
func (k keys) leases() string { return k.prefix + "leases" }

// claimable names the sorted set of a queue's worker jobs ready to claim;
// fold.lua documents its members.
func (k keys) claimable(tenantID, queue string) string {
	return k.tenant(tenantID) + "q:" + escape(queue) + ":claimable"
}

// parked names the sorted set of a paused queue's jobs held back from
// delivery, by creation time.
func (k keys) parked(tenantID, queue string) string {
	return k.tenant(tenantID) + "q:" + escape(queue) + ":parked"
}

// queues names the set of a tenant's queues that have jobs (escaped).
func (k keys) queues(tenantID string) string { return k.tenant(tenantID) + "queues" }

func (k keys) counts(tenantID, queue string) string {
	return k.tenant(tenantID) + "q:" + escape(queue) + ":counts"
}

// stateName is how a state is written in hashes and key names: "ready".
func stateName(s sluicev1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

// parseState reads a stateName.
func parseState(name string) (sluicev1.JobState, bool) {
	v, ok := sluicev1.JobState_value["JOB_STATE_"+strings.ToUpper(name)]
	if !ok || v == 0 {
		return sluicev1.JobState_JOB_STATE_UNSPECIFIED, false
	}
	return sluicev1.JobState(v), true
}

// memberHexLen is the length of the creation time at the start of a
// member.
const memberHexLen = 16

// member is a job's entry in the sorted sets: members sort by time (of
// creation in the job indexes, of death in the dead-letter indexes), then
// job id.
func member(at time.Time, jobID string) string {
	return timePrefix(at) + ":" + jobID
}

// timePrefix is the start of the members of time t: members of earlier
// times sort before it, members of t and later after it.
func timePrefix(t time.Time) string {
	return fmt.Sprintf("%016x", uint64(max(t.UnixMicro(), 0)))
}

// memberJobID returns the job id in a member.
func memberJobID(m string) (string, bool) {
	if len(m) <= memberHexLen+1 || m[memberHexLen] != ':' {
		return "", false
	}
	if _, err := strconv.ParseUint(m[:memberHexLen], 16, 64); err != nil {
		return "", false
	}
	return m[memberHexLen+1:], true
}

// pageToken is the opaque form of the last member of a page.
func pageToken(m string) string { return base64.RawURLEncoding.EncodeToString([]byte(m)) }

// parsePageToken returns the member in a page token.
func parsePageToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", &FieldError{Field: "pageToken", Reason: "malformed"}
	}
	m := string(b)
	if _, ok := memberJobID(m); !ok {
		return "", &FieldError{Field: "pageToken", Reason: "malformed"}
	}
	return m, nil
}
