package analytics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

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
}

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
		return fmt.Errorf("analytics: kafka client: %w", err)
	}
	s.cl = cl
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done = cancel, make(chan struct{})
	go s.run(runCtx)
	return nil
}

// Stop stops fetching, inserts and commits the batch in hand (until ctx
// ends), and leaves the group.
func (s *Sink) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	var err error
	select {
	case <-s.done:
	case <-ctx.Done():
		err = fmt.Errorf("stop analytics sink: %w", ctx.Err())
	}
	s.cl.Close()
	if s.owned {
		if cerr := s.conn.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close clickhouse: %w", cerr)
		}
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
		if ctx.Err() != nil {
			break
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				log.WarnContext(ctx, "fetch events", "topic", topic, "partition", partition, "error", err)
			}
		})
		fetches.EachRecord(func(rec *kgo.Record) { s.add(ctx, b, rec) })
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
	// Stopping with a batch in hand: give it a last chance.
	final, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
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
}

// add turns a record into rows. A record that is not an event (it cannot
// be decoded) is logged and skipped: it is still counted, so its offset
// is committed with the batch.
func (s *Sink) add(ctx context.Context, b *batch, rec *kgo.Record) {
	if b.records == 0 {
		b.first = s.cfg.Now()
	}
	b.records++
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
// then commits the offsets of its records.
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
	if err := s.cl.CommitUncommittedOffsets(ctx); err != nil {
		s.cfg.Logger.WarnContext(ctx, "commit analytics offsets", "error", err)
	}
	return nil
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
