package projections

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Results of fold.lua.
const (
	foldStale   = -1
	foldSeen    = 0
	foldApplied = 1
	foldIgnored = 2
	foldUnknown = 3
)

// call is one EVALSHA of foldScript.
type call struct {
	keys []string
	args []any
}

// Apply folds recs, records of the events topic, into the read model and
// advances the checkpoint of every partition in recs past its last record,
// in one pipeline. Applying records again, in any order, changes
// nothing. Records that cannot be decoded, of unknown types, or about jobs
// that were never enqueued are skipped (and logged); they still count as
// read. Apply returns ErrEpochChanged when the read model was reset since
// the store last wrote to it (every fold checks the epoch, so nothing lands
// in the new one), and ErrRebuilding while Rebuild runs.
func (s *Store) Apply(ctx context.Context, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	tok, err := s.epochToken(ctx)
	if err != nil {
		return err
	}
	calls, folds := s.calls(ctx, tok, recs)
	results, err := s.exec(ctx, calls)
	if err != nil {
		return err
	}
	return s.report(ctx, tok, results[:folds], results[folds:])
}

// calls turns recs into fold calls followed by one checkpoint call per
// partition; folds is the number of fold calls.
func (s *Store) calls(ctx context.Context, tok string, recs []*kgo.Record) (calls []call, folds int) {
	type topicPartition struct {
		topic     string
		partition int32
	}
	next := make(map[topicPartition]int64)
	calls = make([]call, 0, len(recs)+1)
	for _, rec := range recs {
		tp := topicPartition{rec.Topic, rec.Partition}
		next[tp] = max(next[tp], rec.Offset+1)
		if c, ok := s.foldCall(ctx, tok, rec); ok {
			calls = append(calls, c)
		}
	}
	folds = len(calls)
	tps := slices.SortedFunc(maps.Keys(next), func(a, b topicPartition) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	for _, tp := range tps {
		calls = append(calls, call{
			keys: []string{s.keys.checkpoint(tp.topic, tp.partition), s.keys.epoch()},
			args: []any{tok, "", strconv.Itoa(int(tp.partition)), strconv.FormatInt(next[tp], 10), "ckpt", "0"},
		})
	}
	return calls, folds
}

// foldCall builds the call folding rec, or reports false for a record to
// skip.
func (s *Store) foldCall(ctx context.Context, tok string, rec *kgo.Record) (call, bool) {
	log := s.cfg.Logger.With("topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset)
	ev, err := eventlog.DecodeEvent(rec)
	if err != nil {
		log.ErrorContext(ctx, "skip undecodable event", "error", err)
		return call{}, false
	}
	if ev.TenantId == "" || ev.JobId == "" {
		// Endpoint events (endpoint.disabled, ...) are about no job; the
		// read model of jobs has nothing to fold.
		level := slog.LevelWarn
		if ev.GetJobId() == "" && strings.HasPrefix(ev.Type, "endpoint.") {
			level = slog.LevelDebug
		}
		log.Log(ctx, level, "skip event without tenant or job", "event_id", ev.EventId, "type", ev.Type)
		return call{}, false
	}
	at := eventTime(ev, rec)
	head := []any{tok, s.keys.tenant(ev.TenantId), strconv.Itoa(int(rec.Partition)), strconv.FormatInt(rec.Offset, 10)}
	var tail []any
	switch body := ev.Body.(type) {
	case *eventv1.Event_JobEnqueued:
		tail, err = enqueuedArgs(ev, body.JobEnqueued.GetSpec(), at)
	case *eventv1.Event_JobAttempted:
		tail, err = attemptedArgs(ev.JobId, body.JobAttempted, at)
	case *eventv1.Event_JobReady:
		created := ""
		if c := body.JobReady.GetSpec().GetCreatedAt(); c != nil {
			created = micros(c.AsTime())
		}
		tail = []any{"ready", micros(at), strconv.Itoa(int(body.JobReady.GetAttempt())), member(at, ev.JobId), created}
	case *eventv1.Event_JobCancelled:
		tail = []any{"cancelled", micros(at)}
	case *eventv1.Event_JobRetried:
		tail = retriedArgs(ev, body.JobRetried, at)
	case *eventv1.Event_JobPurged:
		tail = []any{"purged", micros(at), strconv.FormatInt(at.Add(TombstoneTTL).UnixMilli(), 10)}
	case *eventv1.Event_JobClaimed:
		c := body.JobClaimed
		tail = []any{"claimed", micros(at), strconv.Itoa(int(c.GetAttempt())), c.GetLeaseToken(),
			micros(c.GetLeaseExpiresAt().AsTime()), c.GetWorkerId(), strconv.FormatInt(int64(c.GetLeaseDuration().AsDuration()), 10)}
	case *eventv1.Event_JobLeaseExtended:
		e := body.JobLeaseExtended
		tail = []any{"lease_extended", micros(at), strconv.Itoa(int(e.GetAttempt())), e.GetLeaseToken(), micros(e.GetLeaseExpiresAt().AsTime())}
	case *eventv1.Event_JobParked:
		tail = []any{"parked", micros(at), strconv.Itoa(int(body.JobParked.GetAttempt()))}
	default:
		log.DebugContext(ctx, "skip event of unknown type", "event_id", ev.EventId, "type", ev.Type)
		return call{}, false
	}
	if err != nil {
		log.ErrorContext(ctx, "skip unencodable event", "event_id", ev.EventId, "error", err)
		return call{}, false
	}
	return call{
		keys: []string{s.keys.job(ev.TenantId, ev.JobId), s.keys.epoch(), s.keys.attempts(ev.TenantId, ev.JobId), s.keys.leases()},
		args: append(head, tail...),
	}, true
}

// eventTime is when ev happened: its occurred_at, else the record's
// timestamp.
func eventTime(ev *eventv1.Event, rec *kgo.Record) time.Time {
	if ev.OccurredAt != nil {
		return ev.OccurredAt.AsTime()
	}
	return rec.Timestamp
}

// enqueuedArgs are fold.lua's arguments from ARGV[5] for a job.enqueued.
func enqueuedArgs(ev *eventv1.Event, spec *eventv1.JobSpec, at time.Time) ([]any, error) {
	created := at
	if spec.GetCreatedAt() != nil {
		created = spec.GetCreatedAt().AsTime()
	}
	state := sluicev1.JobState_JOB_STATE_READY
	if spec.GetRunAt() != nil && spec.GetRunAt().AsTime().After(at) {
		state = sluicev1.JobState_JOB_STATE_SCHEDULED
	}
	fields, err := jobFields(ev, spec, created)
	if err != nil {
		return nil, err
	}
	args := []any{"enqueued", micros(at), stateName(state), member(created, ev.JobId), escape(spec.GetQueue())}
	return append(args, fields...), nil
}

// jobFields are the hash fields of a new job that no later event changes.
func jobFields(ev *eventv1.Event, spec *eventv1.JobSpec, created time.Time) ([]any, error) {
	f := []any{
		"id", ev.JobId,
		"tenant", ev.TenantId,
		"queue", spec.GetQueue(),
		"created_at", micros(created),
		"max_attempts", strconv.Itoa(int(spec.GetMaxAttempts())),
		"priority", strconv.Itoa(int(spec.GetPriority())),
		// The event that created the job: the first job.enqueued of its
		// id, which wins over later ones with the same (derived) id.
		"eid", ev.EventId,
		"ready_attempt", "1",
	}
	if spec.GetTarget() == nil {
		f = append(f, "worker", "1")
	}
	if ct := spec.GetContentType(); ct != "" {
		f = append(f, "content_type", ct)
	}
	if spec.GetRunAt() != nil {
		f = append(f, "run_at", micros(spec.GetRunAt().AsTime()))
	}
	if spec.GetTimeout() != nil {
		f = append(f, "timeout", strconv.FormatInt(int64(spec.GetTimeout().AsDuration()), 10))
	}
	encoded, err := encodedFields(spec)
	if err != nil {
		return nil, err
	}
	for name, value := range encoded {
		if value != "" {
			f = append(f, name, value)
		}
	}
	return f, nil
}

// encodedFields are the job's optional fields that are stored as text:
// the payload as it came, messages as protojson, headers as JSON.
func encodedFields(spec *eventv1.JobSpec) (map[string]string, error) {
	f := map[string]string{
		"payload":         string(spec.GetPayload()),
		"idempotency_key": spec.GetIdempotencyKey(),
	}
	var err error
	if t := spec.GetTarget(); t != nil {
		f["target"], err = marshalText(protojson.Marshal(t))
	}
	if p := spec.GetRetryPolicy(); p != nil && err == nil {
		f["retry_policy"], err = marshalText(protojson.Marshal(p))
	}
	if h := spec.GetHeaders(); len(h) > 0 && err == nil {
		f["headers"], err = marshalText(json.Marshal(h))
	}
	if err != nil {
		return nil, fmt.Errorf("encode job spec: %w", err)
	}
	return f, nil
}

func marshalText(b []byte, err error) (string, error) { return string(b), err }

// attemptedArgs are fold.lua's arguments from ARGV[5] for a job.attempted:
// the attempt's effect on the job, the attempt itself for the attempts
// hash, and the dead-letter index member for an attempt that ends the job.
func attemptedArgs(jobID string, a *eventv1.JobAttempted, at time.Time) ([]any, error) {
	to := ""
	switch a.GetOutcome() {
	case eventv1.Outcome_OUTCOME_SUCCEEDED:
		to = stateName(sluicev1.JobState_JOB_STATE_SUCCEEDED)
	case eventv1.Outcome_OUTCOME_RETRY:
		to = stateName(sluicev1.JobState_JOB_STATE_RETRYING)
	case eventv1.Outcome_OUTCOME_DEAD:
		to = stateName(sluicev1.JobState_JOB_STATE_DEAD)
	}
	next := ""
	if a.GetNextAttemptAt() != nil {
		next = micros(a.GetNextAttemptAt().AsTime())
	}
	encoded, err := encodeAttempt(a)
	if err != nil {
		return nil, err
	}
	return []any{
		"attempted", micros(at), strconv.Itoa(int(a.GetAttempt())),
		strconv.Itoa(int(a.GetStatusCode())), a.GetError(), to, next,
		encoded, a.GetReason(), member(at, jobID), string(a.GetResult()),
	}, nil
}

// encodeAttempt is how an attempt is kept in the attempts hash: its
// event, deterministically encoded, so writing it again writes the same
// bytes.
func encodeAttempt(a *eventv1.JobAttempted) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return "", fmt.Errorf("encode attempt %d: %w", a.GetAttempt(), err)
	}
	return string(b), nil
}

// retriedArgs are fold.lua's arguments from ARGV[5] for a job.retried.
func retriedArgs(ev *eventv1.Event, r *eventv1.JobRetried, at time.Time) []any {
	return []any{
		"retried", micros(at), strconv.Itoa(int(r.GetBudgetStart())),
		r.GetReason(), ActorName(ev.GetActor()), string(r.GetPayloadOverride()), member(at, ev.JobId),
	}
}

// ActorName is how an actor is shown in the read model: "api_key:<key
// id>", "system:tiers"; "" for none.
func ActorName(a *eventv1.Actor) string {
	if a == nil {
		return ""
	}
	kind := strings.ToLower(strings.TrimPrefix(a.GetKind().String(), "KIND_"))
	return kind + ":" + a.GetId()
}

// micros formats t as Unix microseconds.
func micros(t time.Time) string { return strconv.FormatInt(t.UnixMicro(), 10) }

// exec runs calls in one pipeline, in order, and returns their results.
// The script is loaded first; after NOSCRIPT (a restarted or flushed
// Redis) nothing was written, and exec loads it and tries once more.
//
// The pipeline is not a MULTI/EXEC: each fold is atomic on its own and
// guarded by its source offset, and the checkpoints come last, so a batch
// cut short is simply applied again. Without MULTI, Redis serves other
// clients (delivery's state checks, API reads) between the folds instead
// of after a whole batch.
func (s *Store) exec(ctx context.Context, calls []call) ([]int64, error) {
	if err := s.loadScript(ctx, false); err != nil {
		return nil, err
	}
	results, err := s.pipeline(ctx, calls)
	if isNoScript(err) {
		if err := s.loadScript(ctx, true); err != nil {
			return nil, err
		}
		results, err = s.pipeline(ctx, calls)
	}
	return results, err
}

func (s *Store) pipeline(ctx context.Context, calls []call) ([]int64, error) {
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			p.EvalSha(ctx, foldScript.Hash(), c.keys, c.args...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apply %d folds: %w", len(calls), err)
	}
	results := make([]int64, 0, len(cmds))
	for _, c := range cmds {
		if ec, ok := c.(*redis.Cmd); ok {
			n, err := ec.Int64()
			if err != nil {
				return nil, fmt.Errorf("read fold result: %w", err)
			}
			results = append(results, n)
		}
	}
	return results, nil
}

// report logs what a transaction did, and turns a refused epoch into
// ErrEpochChanged.
func (s *Store) report(ctx context.Context, tok string, folds, checkpoints []int64) error {
	var n [foldUnknown + 1]int
	for _, r := range slices.Concat(folds, checkpoints) {
		if r == foldStale {
			s.forgetEpoch(tok)
			return ErrEpochChanged
		}
	}
	for _, r := range folds {
		if r >= 0 && int(r) < len(n) {
			n[r]++
		}
	}
	s.cfg.Logger.DebugContext(ctx, "applied events",
		"events", len(folds), "applied", n[foldApplied], "already_applied", n[foldSeen],
		"ignored", n[foldIgnored], "unknown_job", n[foldUnknown], "partitions", len(checkpoints))
	return nil
}
