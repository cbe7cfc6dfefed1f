// Package projections is the Redis read model of jobs: the current state of
// every job, listing indexes and per-queue state counters, folded from the
// events topic.
//
// # Guarantees
//
// Store.Apply writes a batch of records and then the checkpoint of every
// partition in it, in one pipeline: each fold is one atomic script call,
// and a partition's checkpoint (the next offset to read) is written after
// the batch's folds, so it never covers a record whose effect is missing. Every job hash stores the (partition,
// offset) of the last event applied to it and ignores events at or below
// that offset, and the folds themselves ignore duplicate events at later
// offsets, so applying any record again changes nothing.
//
// # Folds
//
// job.enqueued creates the job (scheduled when its runAt is after the
// event, else ready); a second one is ignored. job.attempted for an
// attempt above the stored one records it (attempt, last status and
// error, and the attempt itself in the job's attempts hash) and moves the
// job to succeeded, retrying or dead by its outcome; a job that dies is
// listed in the dead-letter indexes with the time and reason of its
// death. A cancelled job records the attempt but stays cancelled.
// job.ready for an attempt above the stored one makes a scheduled or
// retrying job ready. job.cancelled cancels a job not yet succeeded, dead
// or cancelled.
//
// job.retried makes a dead or cancelled job ready again when its new
// budget start is above every attempt and every earlier retry of the job
// (so a copy of an older retry changes nothing): it stores the budget
// start, the retry's time, reason and actor and the state it left,
// counts the retry, replaces the payload when the retry overrides it,
// and takes the job off the dead-letter indexes. The job's attempt stays
// until the next job.attempted; the job.ready written with the retry
// finds the job ready and changes nothing.
//
// A job without a target waits for a worker: while ready it is listed in
// its queue's claimable set, by priority class then the time it became
// ready. Claim (claim.lua) leases jobs from it ahead of their job.claimed
// events, which fold to the same state (running, lease token and expiry,
// worker); job.lease_extended moves the expiry; the attempt's
// job.attempted ends the lease. FinishLease, ExtendLease and RestoreLease
// act on a lease at once, for the WorkerService, and ExpiredLeases lists
// leases that ran out. job.parked lists a ready job of a paused queue in
// its parked set; the job.ready that resumes it takes it off.
//
// job.enqueued stores its event id ("eid"): of several with one job id
// (an idempotency key's derived id), the first in log order created the
// job.
//
// job.purged deletes a dead job: its hash, its attempts and its entries
// in every index, with its count. What remains is a tombstone hash
// holding only the purge's (partition, offset) and "tombstone", which
// every later event of the job leaves as it is and which queries treat as
// no job; it expires 30 days after the purge (TombstoneTTL). Any
// other job ignores job.purged.
//
// Succeeded jobs never change; dead jobs change only by job.retried and
// job.purged. Events about jobs never enqueued and events of unknown
// types are skipped.
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
//	{prefix}t:{tenant}:job:{id}:attempts        hash: attempt number → its job.attempted body
//	{prefix}t:{tenant}:jobs                     zset: every job of the tenant
//	{prefix}t:{tenant}:q:{queue}:jobs           zset: jobs of a queue
//	{prefix}t:{tenant}:s:{state}:jobs           zset: jobs in a state
//	{prefix}t:{tenant}:q:{queue}:s:{state}:jobs zset: jobs of a queue in a state
//	{prefix}t:{tenant}:q:{queue}:counts         hash: state → number of jobs
//	{prefix}t:{tenant}:dlq                      zset: dead jobs, by time of death
//	{prefix}t:{tenant}:q:{queue}:dlq            zset: dead jobs of a queue, by time of death
//	{prefix}t:{tenant}:q:{queue}:claimable      zset: ready worker jobs, "{class}{time}:{id}"
//	{prefix}t:{tenant}:q:{queue}:parked         zset: jobs a paused queue holds back
//	{prefix}t:{tenant}:queues                   set: the tenant's queues that had jobs
//	{prefix}leases                              zset: leased job hash keys by lease expiry (µs)
//
// Sorted-set members all have score 0 and read "{time}:{id}", where time
// is the job's creation time (in the dead-letter indexes: the time it
// died) in Unix microseconds as 16 lowercase hex digits, so lexicographic
// order is time order; listings walk them newest first with ZRANGE …
// BYLEX REV and a page token is the last member returned. A dead job's
// hash keeps its dead-letter member in "dlq_member", with "died_at" and
// "dead_reason". Attempts are kept as protobuf (JobAttempted, encoded
// deterministically), response excerpt and headers included: the
// dead-letter listing and a retry's history read them. States are the
// lowercase JobState names without their prefix ("ready", "cancelled").
//
// Dead letters are listed from the dead-letter indexes, filtered by time
// of death through the index range, and by target and error by reading
// those fields of each candidate. A read model folded by an earlier
// version has no dead-letter indexes or attempts: rebuild it
// (`sluice projections rebuild`).
package projections
