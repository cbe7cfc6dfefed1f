// Package analytics is Sluice's audit trail in ClickHouse: the sink that
// copies every event of the events topic into ClickHouse (the analytics
// role), the embedded schema migrations, and the audit queries the API
// answers from it.
//
// # Guarantees
//
// The Sink reads sluice.events in its own consumer group, committed data
// only (read_committed), starting at the beginning of the log when the
// group has no offsets (a first run backfills the whole log). It inserts
// records in batches, flushed when a batch is full or its oldest record
// has waited Config.FlushInterval, and commits a batch's offsets only
// after ClickHouse acknowledged the batch's inserts: nothing is committed
// that is not in ClickHouse. While ClickHouse is down the sink holds its
// batch and retries with backoff; it fetches nothing more until the batch
// is in, so it catches up from its committed offsets when ClickHouse
// returns. A commit names the offsets of the batch's own records, so
// records fetched while stopping are committed only once inserted. Stop
// gives the batch in hand a last insert within its context and returns
// only when the sink's goroutine has ended. Delivery is a separate
// consumer group and never waits on it.
//
// Every row carries the (topic, partition, offset) of its record, and the
// tables are ReplacingMergeTree ordered by a key that record determines,
// so inserting a record again (after a crash, a rebalance or a replay of
// the log) leaves one row once ClickHouse merged; queries read with FINAL
// and so never count a record twice even before the merge. An event
// written twice to the log (the same event id at two offsets, as a crash
// of its producer can leave) is shown once by the timeline, and an
// attempt once per (job, attempt) by the attempt queries.
//
// # Schema
//
// Migrations are SQL files embedded in the binary (migrations/NNNN_*.sql),
// applied in version order by Migrate, each statement idempotent, and
// recorded in sluice_schema_migrations; a version recorded there is never
// applied again. Tables:
//
//	sluice_events    one row per event: envelope, queue, target, attempt,
//	                 status, latency, error, outcome, reason, offsets
//	sluice_attempts  one row per job.attempted: job, queue, endpoint,
//	                 target URL, attempt, status, latency, error,
//	                 response excerpt, outcome, actor, offsets
//
// Both are partitioned by month and ordered by (tenant_id, job_id, topic,
// partition, offset). The schema uses only types and functions that
// ClickHouse 18.x has (no DateTime64: times are a DateTime plus the Unix
// microseconds in an Int64), and every insert names its columns, so it
// runs on Debian's old clickhouse-server and on current releases.
package analytics
