package analytics

import (
	"context"
	"fmt"
	"slices"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// lookupChunk is the most jobs in one lookup query.
const lookupChunk = 1000

// fillTargets fills in the queue and target of rows whose events do not
// name them (job.attempted, job.cancelled, ...): from the jobs seen
// since, else from the job.enqueued and job.ready rows ClickHouse holds
// (the sink was restarted after the job's first events were copied). A
// job whose first events are gone from both keeps empty fields.
func (s *Sink) fillTargets(ctx context.Context, b *batch) error {
	var want []jobKey
	seen := make(map[jobKey]bool)
	for _, r := range b.missing {
		k := jobKey{r.TenantID, r.JobID}
		if t, ok := s.jobs.get(k); ok {
			r.setTarget(t)
			continue
		}
		if !seen[k] {
			seen[k] = true
			want = append(want, k)
		}
	}
	for chunk := range slices.Chunk(want, lookupChunk) {
		if err := s.lookupTargets(ctx, chunk); err != nil {
			return err
		}
	}
	for _, r := range b.missing {
		if t, ok := s.jobs.get(jobKey{r.TenantID, r.JobID}); ok {
			r.setTarget(t)
		}
	}
	b.missing = nil
	return nil
}

// lookupTargets reads the targets of jobs from their stored job.enqueued
// and job.ready rows into the cache. It looks up (tenant_id, job_id)
// pairs, the tables' primary key prefix, so ClickHouse reads only the
// jobs' granules.
func (s *Sink) lookupTargets(ctx context.Context, jobs []jobKey) error {
	keys := make([]any, len(jobs))
	for i, k := range jobs {
		keys[i] = clickhouse.GroupSet{Value: []any{k.tenantID, k.jobID}}
	}
	rows, err := s.conn.Query(ctx, "SELECT tenant_id, job_id, any(queue), any(endpoint_id), any(target_url) FROM "+
		s.cfg.DB.Database+".sluice_events WHERE (tenant_id, job_id) IN ? AND type IN ('job.enqueued', 'job.ready') "+
		"GROUP BY tenant_id, job_id", clickhouse.GroupSet{Value: keys})
	if err != nil {
		return fmt.Errorf("look up targets of %d jobs: %w", len(jobs), err)
	}
	defer rows.Close()
	for rows.Next() {
		var k jobKey
		var t jobTarget
		if err := rows.Scan(&k.tenantID, &k.jobID, &t.queue, &t.endpointID, &t.url); err != nil {
			return fmt.Errorf("look up targets of %d jobs: %w", len(jobs), err)
		}
		s.jobs.put(k, t)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("look up targets of %d jobs: %w", len(jobs), err)
	}
	return nil
}
