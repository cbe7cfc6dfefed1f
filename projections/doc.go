// Package projections is the Redis read model of jobs: the current state of
// every job, listing indexes and per-queue state counters, folded from the
// events topic.
//
// # Guarantees
//
// Store.Apply writes a batch of records and the checkpoint of every
// partition in it in one MULTI/EXEC: Redis holds all of a batch or none of
// it, and a partition's checkpoint (the next offset to read) never covers a
// record whose effect is missing. Every job hash stores the (partition,
// offset) of the last event applied to it and ignores events at or below
// that offset, and the folds themselves ignore duplicate events at later
// offsets, so applying any record again changes nothing.
//
// # Folds
//
// job.enqueued creates the job (scheduled when its runAt is after the
// event, else ready); a second one is ignored. job.attempted for an
// attempt above the stored one records it (attempt, last status and
// error) and moves the job to succeeded, retrying or dead by its outcome;
// a cancelled job records it but stays cancelled. job.ready for an attempt
// above the stored one makes a scheduled or retrying job ready.
// job.cancelled cancels a job not yet succeeded, dead or cancelled.
// Succeeded and dead jobs never change. Events about jobs never enqueued
// and events of unknown types are skipped.
//
// Redis can be flushed, or emptied with Store.Rebuild, at any time: every
// write carries the read model's epoch token, a write with a stale token is
// refused as a whole (ErrEpochChanged), and the Projector then rejoins its
// group and re-reads each partition from its checkpoint (the start of the
// log when there is none).
//
// A single Redis server (or a primary with replicas) is required: one
// transaction spans keys of many tenants, which Redis Cluster cannot do.
// The same commands run on Redis 7 and on miniredis, the embedded server
// of the dev mode.
//
// # Key layout
//
// Every key starts with the configured prefix (default "sluice:"). Tenant
// ids, queue names and job ids are escaped ("%" → "%25", ":" → "%3A") so a
// key names exactly one thing.
//
//	{prefix}epoch                               epoch token of the read model
//	{prefix}ckpt:{topic}:{partition}            next offset to read
//	{prefix}t:{tenant}:job:{id}                 hash: the job
//	{prefix}t:{tenant}:jobs                     zset: every job of the tenant
//	{prefix}t:{tenant}:q:{queue}:jobs           zset: jobs of a queue
//	{prefix}t:{tenant}:s:{state}:jobs           zset: jobs in a state
//	{prefix}t:{tenant}:q:{queue}:s:{state}:jobs zset: jobs of a queue in a state
//	{prefix}t:{tenant}:q:{queue}:counts         hash: state → number of jobs
//
// Sorted-set members all have score 0 and read "{created}:{id}", where
// created is the job's creation time in Unix microseconds as 16 lowercase
// hex digits, so lexicographic order is creation order; listings walk them
// newest first with ZRANGE … BYLEX REV and a page token is the last member
// returned. States are the lowercase JobState names without their prefix
// ("ready", "cancelled").
package projections
