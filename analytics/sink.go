package analytics

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/log/eventlog"
)

// Sink copies the events topic into ClickHouse: the analytics role. See
// the package doc for what it guarantees.
type Sink struct {
	cfg   SinkConfig
	conn  driver.Conn
	owned bool // conn was opened by the sink
	cl    *kgo.Client
	jobs  *jobCache

	cancel context.CancelFunc
	done   chan struct{}
	// stopCtx is Stop's context, set before run is cancelled: it bounds
	// the last insert of the batch in hand.
	stopCtx atomic.Pointer[context.Context]
}

// finalInsertTimeout caps the last insert of the batch in hand when
// stopping, whatever Stop's context allows.
const finalInsertTimeout = 10 * time.Second

// NewSink returns a sink for cfg; Start runs it.
func NewSink(cfg SinkConfig) (*Sink, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{cfg: cfg, conn: cfg.Conn, jobs: newJobCache(cfg.JobCacheSize)}
	if s.conn == nil {
		conn, err := Open(cfg.DB)
		if err != nil {
			return nil, err
		}
		s.conn, s.owned = conn, true
	}
	return s, nil
}

// Start joins the sink's consumer group and returns; the sink then
// applies the migrations (retrying while ClickHouse is unreachable) and
// copies the log until Stop. A ClickHouse that is down does not fail
// Start.
func (s *Sink) Start(ctx context.Context) error {
	cl, err := s.newClient()
	if err != nil {
		return err
	}
	s.cl = cl
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done = cancel, make(chan struct{})
	go s.run(runCtx)
	return nil
}

// newClient is the sink's Kafka client: a member of its group that
// commits only what Start's loop tells it to.
func (s *Sink) newClient() (*kgo.Client, error) {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
	}, s.cfg.ClientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("analytics: kafka client: %w", err)
	}
	return cl, nil
}

// Stop stops fetching, inserts and commits the batch in hand (until ctx
// ends, at most 10s), and leaves the group. It returns once the sink's
// goroutine has ended: when ctx ends first, it closes the Kafka client
// and the ClickHouse connection under the goroutine and waits for it.
func (s *Sink) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.stopCtx.Store(&ctx)
	s.cancel()
	var err error
	select {
	case <-s.done:
		s.cl.Close()
		if s.owned {
			if cerr := s.conn.Close(); cerr != nil {
				err = fmt.Errorf("close clickhouse: %w", cerr)
			}
		}
	case <-ctx.Done():
		err = fmt.Errorf("stop analytics sink: %w", ctx.Err())
		// The last insert and commit run under ctx; closing our
		// connection and the client ends whatever still waits on them.
		// Leaving the group waits for the poll's rebalance block, which
		// the goroutine would lift only on its way out.
		if s.owned {
			_ = s.conn.Close()
		}
		s.cl.AllowRebalance()
		s.cl.Close()
		<-s.done
	}
	return err
}

// run migrates, then copies batches until ctx ends.
func (s *Sink) run(ctx context.Context) {
	defer close(s.done)
	// Polling blocks rebalances until allowed; leaving the group is one.
	defer s.cl.AllowRebalance()
	log := s.cfg.Logger.With("role", "analytics")
	if err := s.retry(ctx, "migrate clickhouse", func() error {
		applied, err := Migrate(ctx, s.conn, s.cfg.DB.Database, s.cfg.Now())
		if len(applied) > 0 {
			log.InfoContext(ctx, "clickhouse migrations applied", "database", s.cfg.DB.Database, "versions", applied)
		}
		return err
	}); err != nil {
		return
	}
	b := new(batch)
	for {
		fetches := s.cl.PollRecords(s.pollContext(ctx, b), s.cfg.BatchSize-b.records)
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				log.WarnContext(ctx, "fetch events", "topic", topic, "partition", partition, "error", err)
			}
		})
		// Records a poll returns go into the batch even when stopping: the
		// last insert below takes them along.
		fetches.EachRecord(func(rec *kgo.Record) { s.add(ctx, b, rec) })
		if ctx.Err() != nil {
			break
		}
		if b.records > 0 && (b.records >= s.cfg.BatchSize || !s.cfg.Now().Before(b.first.Add(s.cfg.FlushInterval))) {
			if err := s.flush(ctx, b); err != nil {
				break // stopping: nothing committed past what ClickHouse holds
			}
			b = new(batch)
		}
		s.cl.AllowRebalance()
	}
	if b.records == 0 {
		return
	}
	// Stopping with a batch in hand: give it a last chance, as long as
	// Stop's context allows.
	stopCtx := context.Background()
	if p := s.stopCtx.Load(); p != nil {
		stopCtx = *p
	}
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalInsertTimeout)
	defer cancel()
	defer context.AfterFunc(stopCtx, cancel)()
	if err := s.insertAndCommit(final, b); err != nil {
		log.WarnContext(final, "analytics batch left for the next run", "records", b.records, "error", err)
	}
}

// pollContext ends when b is due, or with ctx when b is empty.
func (s *Sink) pollContext(ctx context.Context, b *batch) context.Context {
	if b.records == 0 {
		return ctx
	}
	wait := b.first.Add(s.cfg.FlushInterval).Sub(s.cfg.Now())
	pctx, cancel := context.WithTimeout(ctx, max(wait, time.Millisecond))
	context.AfterFunc(pctx, cancel)
	return pctx
}

// batch is the records fetched and not yet in ClickHouse.
type batch struct {
	events   []*eventRow
	attempts []*attemptRow
	missing  []*eventRow // rows whose job target is not known yet
	records  int
	first    time.Time
	// offsets are the offsets to commit once the rows are in: per topic
	// and partition, the one after the batch's last record.
	offsets map[string]map[int32]kgo.EpochOffset
}

// track notes rec's offset as the batch's last of its partition.
func (b *batch) track(rec *kgo.Record) {
	if b.offsets == nil {
		b.offsets = make(map[string]map[int32]kgo.EpochOffset)
	}
	ps := b.offsets[rec.Topic]
	if ps == nil {
		ps = make(map[int32]kgo.EpochOffset)
		b.offsets[rec.Topic] = ps
	}
	next := kgo.EpochOffset{Epoch: rec.LeaderEpoch, Offset: rec.Offset + 1}
	if at, ok := ps[rec.Partition]; !ok || at.Less(next) {
		ps[rec.Partition] = next
	}
}

// add turns a record into rows. A record that is not an event (it cannot
// be decoded) is logged and skipped: it is still counted, so its offset
// is committed with the batch.
func (s *Sink) add(ctx context.Context, b *batch, rec *kgo.Record) {
	if b.records == 0 {
		b.first = s.cfg.Now()
	}
	b.records++
	b.track(rec)
	ev, err := eventlog.DecodeEvent(rec)
	if err != nil {
		s.cfg.Logger.WarnContext(ctx, "analytics: skip undecodable record", "error", err)
		return
	}
	row, att := rowsOf(rec, ev, s.cfg.Now())
	row.attempt = att
	key := jobKey{row.TenantID, row.JobID}
	if row.hasJobTarget {
		s.jobs.put(key, jobTarget{queue: row.Queue, endpointID: row.EndpointID, url: row.TargetURL})
	} else if t, ok := s.jobs.get(key); ok {
		row.setTarget(t)
	} else if row.JobID != "" {
		b.missing = append(b.missing, row)
	}
	b.events = append(b.events, row)
	if att != nil {
		b.attempts = append(b.attempts, att)
	}
}

// flush inserts and commits b, retrying with backoff until it succeeds
// or ctx ends.
func (s *Sink) flush(ctx context.Context, b *batch) error {
	return s.retry(ctx, "insert analytics batch", func() error { return s.insertAndCommit(ctx, b) })
}

// insertAndCommit fills in missing job targets, inserts b's rows and
// then commits the offsets of its records: only those, never records
// polled since.
func (s *Sink) insertAndCommit(ctx context.Context, b *batch) error {
	start := s.cfg.Now()
	if err := s.fillTargets(ctx, b); err != nil {
		return err
	}
	if err := s.insert(ctx, "sluice_events", eventColumns, len(b.events), func(i int) []any { return b.events[i].values() }); err != nil {
		return err
	}
	if err := s.insert(ctx, "sluice_attempts", attemptColumns, len(b.attempts), func(i int) []any { return b.attempts[i].values() }); err != nil {
		return err
	}
	if s.cfg.Observer != nil {
		s.cfg.Observer.Flushed(b.records, s.cfg.Now().Sub(start))
	}
	// ClickHouse holds the batch: only now may its offsets be committed.
	// A failed commit costs a re-read, which the tables deduplicate.
	if err := s.commit(ctx, b.offsets); err != nil {
		s.cfg.Logger.WarnContext(ctx, "commit analytics offsets", "error", err)
	}
	return nil
}

// commit commits offsets and reports the first error, of the request or
// of a partition.
func (s *Sink) commit(ctx context.Context, offsets map[string]map[int32]kgo.EpochOffset) error {
	var err error
	s.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, cerr error) {
		if cerr != nil {
			err = cerr
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil && err == nil {
					err = fmt.Errorf("partition %s/%d: %w", t.Topic, p.Partition, perr)
				}
			}
		}
	})
	return err
}

// insert writes n rows into table in one batch.
func (s *Sink) insert(ctx context.Context, table, columns string, n int, row func(i int) []any) error {
	if n == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.DB.Database+"."+table+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", table, err)
	}
	for i := range n {
		if err := batch.Append(row(i)...); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append row to %s: %w", table, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", n, table, err)
	}
	return nil
}

// retry runs fn until it succeeds, waiting between tries with backoff
// up to MaxBackoff; it returns ctx's error when ctx ends first.
func (s *Sink) retry(ctx context.Context, op string, fn func() error) error {
	wait := 100 * time.Millisecond
	for try := 1; ; try++ {
		err := fn()
		if err == nil {
			if try > 1 {
				s.cfg.Logger.InfoContext(ctx, op+" succeeded again", "tries", try)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.cfg.Observer != nil {
			s.cfg.Observer.FlushFailed(err)
		}
		s.cfg.Logger.WarnContext(ctx, op, "try", try, "retry_in", wait, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, s.cfg.MaxBackoff)
	}
}
