package projections_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// checkRetry returns a check that the job's latest retry left from, with
// budget and whether the payload was overridden, and that the payload is
// payload (JSON) and the job was retried retries times.
func checkRetry(from sluicev1.JobState, budget int32, overridden bool, payload string, retries int32) func(*testing.T, *sluicev1.Job) {
	return func(t *testing.T, j *sluicev1.Job) {
		t.Helper()
		r := j.GetLastRetry()
		if r == nil {
			t.Fatalf("lastRetry: got none, want one")
		}
		if r.FromState != from || r.BudgetStart != budget || r.PayloadOverridden != overridden ||
			r.Actor != "api_key:key-1" || r.Reason != "fixed the receiver" || r.At == nil {
			t.Errorf("lastRetry: got %v; want from %v, budget %d, overridden %t, actor api_key:key-1, the reason and a time",
				r, from, budget, overridden)
		}
		if j.Retries != retries {
			t.Errorf("retries: got %d, want %d", j.Retries, retries)
		}
		got, err := protojson.Marshal(j.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if compact(got) != payload {
			t.Errorf("payload: got %s, want %s", got, payload)
		}
	}
}

// compact drops the spaces protojson may put in its output.
func compact(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c != ' ' && c != '\n' {
			out = append(out, c)
		}
	}
	return string(out)
}

// original is the payload of enqueued().
const original = `{"n":1,"tags":["a","b"]}`

var retryFoldCases = []foldCase{
	{
		name: "dead then retried with a new payload",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, dead, 410, at(1)),
				retried(tenant, job, 2, `{"n":2}`, at(2)),
				ready(tenant, job, 2, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_READY, attempt: 1, status: 410, lastErr: "HTTP 410",
		check: checkRetry(sluicev1.JobState_JOB_STATE_DEAD, 2, true, `{"n":2}`, 1),
	},
	{
		name: "retried then succeeded",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 500, at(1)),
				attempted(tenant, job, 2, dead, 500, at(2)),
				retried(tenant, job, 3, "", at(3)),
				ready(tenant, job, 3, at(3)),
				attempted(tenant, job, 3, succeeded, 200, at(4)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_SUCCEEDED, attempt: 3, status: 200,
		check: checkRetry(sluicev1.JobState_JOB_STATE_DEAD, 3, false, original, 1),
	},
	{
		name: "retried then dead again is one dead letter",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, dead, 500, at(1)),
				retried(tenant, job, 2, "", at(2)),
				ready(tenant, job, 2, at(2)),
				attempted(tenant, job, 2, dead, 502, at(3)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_DEAD, attempt: 2, status: 502, lastErr: "HTTP 502",
		check: checkRetry(sluicev1.JobState_JOB_STATE_DEAD, 2, false, original, 1),
	},
	{
		name: "retried twice",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, dead, 500, at(1)),
				retried(tenant, job, 2, `"x"`, at(2)),
				attempted(tenant, job, 2, dead, 500, at(3)),
				retried(tenant, job, 3, "", at(4)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_READY, attempt: 2, status: 500, lastErr: "HTTP 500",
		check: checkRetry(sluicev1.JobState_JOB_STATE_DEAD, 3, false, `"x"`, 2),
	},
	{
		name: "cancelled then retried",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				cancelled(tenant, job, at(1)),
				retried(tenant, job, 1, "", at(2)),
				ready(tenant, job, 1, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_READY,
		check: checkRetry(sluicev1.JobState_JOB_STATE_CANCELLED, 1, false, original, 1),
	},
	{
		name: "retry of a job neither dead nor cancelled is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 503, at(1)),
				retried(tenant, job, 2, `{"n":2}`, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_RETRYING, attempt: 1, status: 503, lastErr: "HTTP 503", nextAt: true,
	},
	{
		name: "a copy of an earlier retry is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			first := retried(tenant, job, 2, `{"n":2}`, at(2))
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, dead, 500, at(1)),
				first,
				attempted(tenant, job, 2, dead, 500, at(3)),
				first,
			}
		},
		state: sluicev1.JobState_JOB_STATE_DEAD, attempt: 2, status: 500, lastErr: "HTTP 500",
		check: checkRetry(sluicev1.JobState_JOB_STATE_DEAD, 2, true, `{"n":2}`, 1),
	},
	{
		name: "a retry not above the attempts is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 500, at(1)),
				attempted(tenant, job, 2, dead, 500, at(2)),
				retried(tenant, job, 2, "", at(3)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_DEAD, attempt: 2, status: 500, lastErr: "HTTP 500",
	},
	{
		name: "purged",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, dead, 410, at(1)),
				purged(tenant, job, at(2)),
			}
		},
		missing: true,
	},
	{
		name: "purge of a job not dead is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				purged(tenant, job, at(1)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_READY,
	},
	{
		name: "purge after a retry is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, dead, 410, at(1)),
				retried(tenant, job, 2, "", at(2)),
				purged(tenant, job, at(3)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_READY, attempt: 1, status: 410, lastErr: "HTTP 410",
		check: checkRetry(sluicev1.JobState_JOB_STATE_DEAD, 2, false, original, 1),
	},
	{
		name: "a purged job stays purged",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, dead, 410, at(1)),
				retried(tenant, job, 2, "", at(2)),
				attempted(tenant, job, 2, dead, 410, at(3)),
				purged(tenant, job, at(4)),
				enqueued(tenant, job, queue, at(5)),
				retried(tenant, job, 3, "", at(6)),
				attempted(tenant, job, 3, succeeded, 200, at(7)),
				cancelled(tenant, job, at(8)),
				purged(tenant, job, at(9)),
			}
		},
		missing: true,
	},
}

func TestFoldRetryAndPurge(t *testing.T) {
	t.Parallel()
	for _, tc := range retryFoldCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runRedis(t, func(t *testing.T, b *backend) { testFold(t, b, tc) })
		})
	}
}
