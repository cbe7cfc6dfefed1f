package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/inbound/receiver"
	"github.com/sluicehq/sluice/log/eventlog"
)

// AtomicAppender appends records in one transaction;
// eventlog.Appender implements it.
type AtomicAppender interface {
	AppendAtomic(ctx context.Context, recs []*kgo.Record) error
}

// ReplayerConfig configures a Replayer.
type ReplayerConfig struct {
	// Brokers to read the inbox from. Required.
	Brokers []string
	// ClientOpts are added to the reading client.
	ClientOpts []kgo.Opt
	// Log appends the replayed jobs. Required.
	Log AtomicAppender
	// BatchJobs is how many jobs go into one transaction. Default 500.
	BatchJobs int
	// IdleTimeout ends a replay that reads nothing for this long before
	// reaching the end it started with. Default 5s.
	IdleTimeout time.Duration
	// ClockSkew is how far past `to` reading goes before it stops, for
	// records appended out of time order by different nodes. Default 1m.
	ClockSkew time.Duration
}

// Replayer routes a time range of a source's inbox again.
type Replayer struct {
	router *Router
	cfg    ReplayerConfig
}

// NewReplayer returns a Replayer that routes with r.
func NewReplayer(r *Router, cfg ReplayerConfig) (*Replayer, error) {
	var errs []error
	if len(cfg.Brokers) == 0 {
		errs = append(errs, errors.New("router: ReplayerConfig.Brokers: required"))
	}
	if cfg.Log == nil {
		errs = append(errs, errors.New("router: ReplayerConfig.Log: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.BatchJobs == 0 {
		cfg.BatchJobs = 500
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Second
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = time.Minute
	}
	return &Replayer{router: r, cfg: cfg}, nil
}

// ReplayResult counts what a replay did.
type ReplayResult struct {
	// Requests of the source received in the range.
	Requests int64
	// Jobs enqueued for them, one per job id (a repeated delivery in the
	// range counts once).
	Jobs int64
}

// Replay routes again every request of tenantID's source sourceID
// received in [from, to), as the inbox held it when the call began. Jobs
// are keyed by replayID: replaying with the same id again enqueues
// nothing new. Jobs are committed in batches; an error leaves the batches
// before it committed (a retry with the same replayID completes the rest).
func (p *Replayer) Replay(ctx context.Context, tenantID, sourceID string, from, to time.Time, replayID string) (ReplayResult, error) {
	var res ReplayResult
	topic := p.router.cfg.Topics.Inbox()
	adm, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...)}, p.cfg.ClientOpts...)...)
	if err != nil {
		return res, fmt.Errorf("new inbox client: %w", err)
	}
	defer adm.Close()
	partition, start, end, err := p.bounds(ctx, kadm.NewClient(adm), topic, sourceID, from)
	if err != nil || start >= end {
		return res, err
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(p.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(start)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Commit and abort markers count as read, so the reader always
		// reaches the end it was given.
		kgo.KeepControlRecords(),
	}, p.cfg.ClientOpts...)...)
	if err != nil {
		return res, fmt.Errorf("new inbox reader: %w", err)
	}
	defer cl.Close()

	var (
		batch      []*kgo.Record
		batchBytes int
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := p.cfg.Log.AppendAtomic(ctx, batch); err != nil {
			return fmt.Errorf("append replayed jobs: %w", err)
		}
		res.Jobs += int64(len(batch))
		batch, batchBytes = batch[:0], 0
		return nil
	}
	scope := Scope{ReplayID: replayID}
	seen := make(map[string]bool)
	for next := start; next < end; {
		pollCtx, cancel := context.WithTimeout(ctx, p.cfg.IdleTimeout)
		fs := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return res, fmt.Errorf("replay %s: %w", topic, ctx.Err())
		}
		if err := fs.Err0(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return res, fmt.Errorf("read %s: %w", topic, err)
		}
		if fs.Empty() {
			// Records below end exist but did not come: report it, so the
			// caller repeats the replay (same replay id: nothing twice).
			return res, fmt.Errorf("replay %s: read stalled at offset %d of %d for %s; repeat with the same replay id",
				topic, next, end, p.cfg.IdleTimeout)
		}
		done := false
		fs.EachRecord(func(rec *kgo.Record) {
			if done || rec.Offset >= end {
				done = true
				return
			}
			next = rec.Offset + 1
			if rec.Attrs.IsControl() {
				return
			}
			if rec.Timestamp.After(to.Add(p.cfg.ClockSkew)) {
				done = true
				return
			}
			if string(rec.Key) != sourceID {
				return
			}
			req, err := receiver.Decode(rec)
			if err != nil || req.TenantId != tenantID {
				return
			}
			at := req.ReceivedAt.AsTime()
			if at.Before(from) || !at.Before(to) {
				return
			}
			res.Requests++
			recs, _ := p.router.Route(ctx, req, scope, nil)
			for _, rec := range recs {
				// A repeated delivery in the range names the same job.
				if !seen[string(rec.Key)] {
					seen[string(rec.Key)] = true
					batch = append(batch, rec)
					batchBytes += len(rec.Key) + len(rec.Value)
				}
			}
		})
		if len(batch) >= p.cfg.BatchJobs || batchBytes >= maxReplayTxnBytes || done {
			if err := flush(); err != nil {
				return res, err
			}
		}
		if done {
			break
		}
	}
	return res, flush()
}

// maxReplayTxnBytes closes a replay's transaction early, so large bodies
// never make one huge transaction.
const maxReplayTxnBytes = 16 << 20

// bounds finds the partition holding a source's requests and the offsets
// to read: the first at or after from, and the end.
func (p *Replayer) bounds(ctx context.Context, adm *kadm.Client, topic, sourceID string, from time.Time) (partition int32, start, end int64, err error) {
	details, err := adm.ListTopics(ctx, topic)
	if err == nil {
		err = details.Error()
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("describe %s: %w", topic, err)
	}
	n := len(details[topic].Partitions)
	if n == 0 {
		return 0, 0, 0, fmt.Errorf("describe %s: no partitions", topic)
	}
	// The partition the appender's key partitioner chose.
	partition = int32(kgo.StickyKeyPartitioner(nil).ForTopic(topic).Partition(&kgo.Record{Key: []byte(sourceID)}, n))
	starts, err := adm.ListOffsetsAfterMilli(ctx, from.UnixMilli(), topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("find offsets of %s after %s: %w", topic, from, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	s, _ := starts.Lookup(topic, partition)
	e, _ := ends.Lookup(topic, partition)
	return partition, s.Offset, e.Offset, nil
}

var _ AtomicAppender = (*eventlog.Appender)(nil)
