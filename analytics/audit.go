package analytics

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Reader answers audit queries from the tables the Sink fills.
type Reader struct {
	conn driver.Conn
	db   string
}

// NewReader reads from db (default DefaultDatabase) over conn.
func NewReader(conn driver.Conn, db string) *Reader {
	if db == "" {
		db = DefaultDatabase
	}
	return &Reader{conn: conn, db: db}
}

// JobTimeline returns the events of a tenant's job in log order, each
// event once (the first copy of an event id; the first job.enqueued),
// or ErrNotFound when the trail holds none.
func (r *Reader) JobTimeline(ctx context.Context, tenantID, jobID string) ([]*sluicev1.TimelineEvent, error) {
	rows, err := r.conn.Query(ctx, "SELECT event_id, type, occurred_at_us, attempt, status_code, latency_us, error, "+
		"outcome, reason, actor_kind, actor_id FROM "+r.db+".sluice_events FINAL "+
		"WHERE tenant_id = ? AND job_id = ? ORDER BY topic, partition, offset", tenantID, jobID)
	if err != nil {
		return nil, fmt.Errorf("read timeline of job %s: %w", jobID, err)
	}
	defer rows.Close()
	var events []*sluicev1.TimelineEvent
	seen := make(map[string]bool) // event ids
	enqueued := false
	for rows.Next() {
		var (
			typ, eventID, errText, outcome, reason, actorKind, actorID string
			atUS, latencyUS                                            int64
			attempt, status                                            int32
		)
		if err := rows.Scan(&eventID, &typ, &atUS, &attempt, &status, &latencyUS, &errText,
			&outcome, &reason, &actorKind, &actorID); err != nil {
			return nil, fmt.Errorf("read timeline of job %s: %w", jobID, err)
		}
		if seen[eventID] || (typ == "job.enqueued" && enqueued) {
			continue
		}
		seen[eventID] = true
		enqueued = enqueued || typ == "job.enqueued"
		ev := &sluicev1.TimelineEvent{
			Type: typ, At: timestamppb.New(time.UnixMicro(atUS)), Attempt: attempt, StatusCode: status,
			Error: errText, Outcome: strings.ToLower(outcome), Reason: reason, EventId: eventID,
		}
		if actorKind != "" {
			ev.Actor = actorKind + ":" + actorID
		}
		if typ == "job.attempted" {
			ev.Latency = durationpb.New(time.Duration(latencyUS) * time.Microsecond)
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read timeline of job %s: %w", jobID, err)
	}
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	return events, nil
}

// JobsWithEvent returns which of the tenant's jobIDs have an event of
// eventType in the trail.
func (r *Reader) JobsWithEvent(ctx context.Context, tenantID, eventType string, jobIDs []string) (map[string]bool, error) {
	had := make(map[string]bool)
	if len(jobIDs) == 0 {
		return had, nil
	}
	ids := make([]any, len(jobIDs))
	for i, id := range jobIDs {
		ids[i] = id
	}
	rows, err := r.conn.Query(ctx, "SELECT DISTINCT job_id FROM "+r.db+".sluice_events "+
		"WHERE tenant_id = ? AND type = ? AND job_id IN ?", tenantID, eventType, clickhouse.GroupSet{Value: ids})
	if err != nil {
		return nil, fmt.Errorf("find jobs with %s events: %w", eventType, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("find jobs with %s events: %w", eventType, err)
		}
		had[id] = true
	}
	return had, rows.Err()
}

// Page sizes of QueryAttempts.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// AttemptQuery selects and pages attempts; every field set must match.
type AttemptQuery struct {
	JobID      string
	Queue      string
	EndpointID string
	// StatusCode 0 matches any.
	StatusCode int32
	// ErrorContains matches errors containing it, ignoring case.
	ErrorContains string
	// StartedAfter, when not zero: attempts started at or after it.
	StartedAfter time.Time
	// StartedBefore, when not zero: attempts started before it.
	StartedBefore time.Time
	// PageSize at most MaxPageSize; 0 means DefaultPageSize.
	PageSize int
	// PageToken is the previous page's next token; "" starts with the
	// newest attempt.
	PageToken string
}

// cursor is the position after the last attempt of a page.
type cursor struct {
	startedUS int64
	jobID     string
	attempt   int32
}

func (c cursor) token() string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d/%d/%s", c.startedUS, c.attempt, c.jobID))
}

func parseCursor(tok string) (cursor, error) {
	bad := &FieldError{Field: "pageToken", Reason: "malformed"}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return cursor{}, bad
	}
	parts := strings.SplitN(string(b), "/", 3)
	if len(parts) != 3 || parts[2] == "" {
		return cursor{}, bad
	}
	us, err1 := strconv.ParseInt(parts[0], 10, 64)
	att, err2 := strconv.ParseInt(parts[1], 10, 32)
	if err1 != nil || err2 != nil {
		return cursor{}, bad
	}
	return cursor{startedUS: us, attempt: int32(att), jobID: parts[2]}, nil
}

// QueryAttempts returns a page of a tenant's attempts, newest first (by
// start, then job id and attempt, descending), each (job, attempt) once,
// and the token of the next page, "" after the last.
func (r *Reader) QueryAttempts(ctx context.Context, tenantID string, q AttemptQuery) ([]*sluicev1.AttemptRecord, string, error) {
	size := q.PageSize
	switch {
	case size == 0:
		size = DefaultPageSize
	case size < 0 || size > MaxPageSize:
		return nil, "", &FieldError{Field: "pageSize", Reason: fmt.Sprintf("%d is outside 0..%d", size, MaxPageSize)}
	}
	where := []string{"tenant_id = ?"}
	args := []any{tenantID}
	add := func(cond string, a ...any) { where = append(where, cond); args = append(args, a...) }
	if q.JobID != "" {
		add("job_id = ?", q.JobID)
	}
	if q.Queue != "" {
		add("queue = ?", q.Queue)
	}
	if q.EndpointID != "" {
		add("endpoint_id = ?", q.EndpointID)
	}
	if q.StatusCode != 0 {
		add("status_code = ?", q.StatusCode)
	}
	if q.ErrorContains != "" {
		add("positionCaseInsensitive(error, ?) > 0", q.ErrorContains)
	}
	if !q.StartedAfter.IsZero() {
		add("started_at_us >= ?", q.StartedAfter.UnixMicro())
	}
	if !q.StartedBefore.IsZero() {
		add("started_at_us < ?", q.StartedBefore.UnixMicro())
	}
	if q.PageToken != "" {
		c, err := parseCursor(q.PageToken)
		if err != nil {
			return nil, "", err
		}
		add("(started_at_us < ? OR (started_at_us = ? AND (job_id < ? OR (job_id = ? AND attempt < ?))))",
			c.startedUS, c.startedUS, c.jobID, c.jobID, c.attempt)
	}
	rows, err := r.conn.Query(ctx, "SELECT job_id, queue, endpoint_id, target_url, attempt, status_code, latency_us, "+
		"error, response_excerpt, outcome, started_at_us FROM "+r.db+".sluice_attempts FINAL WHERE "+
		strings.Join(where, " AND ")+" ORDER BY started_at_us DESC, job_id DESC, attempt DESC, offset ASC "+
		"LIMIT 1 BY job_id, attempt LIMIT "+strconv.Itoa(size+1), args...)
	if err != nil {
		return nil, "", fmt.Errorf("query attempts: %w", err)
	}
	defer rows.Close()
	var out []*sluicev1.AttemptRecord
	var last cursor
	for rows.Next() {
		var a sluicev1.AttemptRecord
		var latencyUS, startedUS int64
		var outcome string
		if err := rows.Scan(&a.JobId, &a.Queue, &a.EndpointId, &a.TargetUrl, &a.Attempt, &a.StatusCode, &latencyUS,
			&a.Error, &a.ResponseExcerpt, &outcome, &startedUS); err != nil {
			return nil, "", fmt.Errorf("query attempts: %w", err)
		}
		if len(out) == size {
			return out, last.token(), nil
		}
		a.Latency = durationpb.New(time.Duration(latencyUS) * time.Microsecond)
		a.StartedAt = timestamppb.New(time.UnixMicro(startedUS))
		a.Outcome = strings.ToLower(outcome)
		out = append(out, &a)
		last = cursor{startedUS: startedUS, jobID: a.JobId, attempt: a.Attempt}
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("query attempts: %w", err)
	}
	return out, "", nil
}
