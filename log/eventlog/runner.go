package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Handler processes one record and returns the records to append as its
// outcome. The outcome is produced in the same transaction as the offset
// commit that covers the record. An error means the record could not be
// handled now (a dependency is down); the runner retries it with backoff,
// holding back that partition's committed offset, until it succeeds or the
// partition is handed back. Domain failures (a delivery that got a 500) are
// outcomes, not errors.
type Handler func(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// Group is the consumer group. Required.
	Group string
	// Topics to consume. Required.
	Topics []string
	// Handler processes each record. Required.
	Handler Handler
	// TransactionalID of the runner's producer. Stable across restarts of
	// one node, so a restarted node fences its predecessor's open
	// transaction at once; unique among live nodes. Default Group + "-" +
	// NewID().
	TransactionalID string
	// MaxInFlight is how many records of one partition are handled at
	// once. Default 64.
	MaxInFlight int
	// MaxWindow is how many records of one partition may be fetched and
	// not yet committable (in flight, queued, or finished above an
	// unfinished one) before fetching that partition pauses. It bounds
	// memory by work in flight, not by backlog. Default 4096.
	MaxWindow int
	// CommitInterval is the longest an outcome waits before its
	// transaction commits. Default 10ms.
	CommitInterval time.Duration
	// Priority classifies a record (0 first, up to PriorityLow): a
	// partition's fetched backlog is handled class by class, each class in
	// offset order. Default: every record in offset order.
	Priority func(*kgo.Record) int
	// MaxBackoff caps the wait between retries of a failing handler.
	// Default 5s.
	MaxBackoff time.Duration
	// ClientOpts are added to the client (hooks, dialers, logging).
	ClientOpts []kgo.Opt
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c RunnerConfig) WithDefaults() RunnerConfig {
	if c.TransactionalID == "" {
		c.TransactionalID = c.Group + "-" + NewID()
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 64
	}
	if c.MaxWindow == 0 {
		c.MaxWindow = 4096
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 10 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with c.
func (c RunnerConfig) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("RunnerConfig.Brokers: required"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("RunnerConfig.Group: required"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("RunnerConfig.Topics: required"))
	}
	if c.Handler == nil {
		errs = append(errs, errors.New("RunnerConfig.Handler: required"))
	}
	if c.MaxInFlight < 0 || c.MaxWindow < 0 || c.CommitInterval < 0 {
		errs = append(errs, errors.New("RunnerConfig: MaxInFlight, MaxWindow and CommitInterval must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	return nil
}

type topicPartition struct {
	topic     string
	partition int32
}

// output is a record to produce and the partition whose record caused it.
type output struct {
	from topicPartition
	rec  *kgo.Record
}

// Runner consumes topics in a consumer group and hands every record to a
// Handler; see the package doc for its guarantees.
type Runner struct {
	cfg  RunnerConfig
	sess *kgo.GroupTransactSession

	mu        sync.Mutex
	parts     map[topicPartition]*partition
	outputs   []output
	committed map[topicPartition]int64

	cancelPoll context.CancelFunc
	workCtx    context.Context
	cancelWork context.CancelFunc
	done       chan struct{}
}

// NewRunner creates a Runner; Start begins consuming.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:       cfg,
		parts:     make(map[topicPartition]*partition),
		committed: make(map[topicPartition]int64),
		done:      make(chan struct{}),
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.TransactionalID(cfg.TransactionalID),
		kgo.TransactionTimeout(10 * time.Second),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(MaxRecordBytes),
		kgo.RetryBackoffFn(retryBackoff),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.revoked),
		kgo.OnPartitionsLost(r.revoked),
	}, cfg.ClientOpts...)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return nil, fmt.Errorf("eventlog: new transact session for group %s: %w", cfg.Group, err)
	}
	r.sess = sess
	return r, nil
}

// Start begins consuming in the background and returns at once.
func (r *Runner) Start(ctx context.Context) error {
	pollCtx, cancelPoll := context.WithCancel(context.WithoutCancel(ctx))
	r.workCtx, r.cancelWork = context.WithCancel(context.WithoutCancel(ctx))
	r.cancelPoll = cancelPoll
	go r.loop(pollCtx)
	return nil
}

// Stop stops fetching, waits for in-flight handlers (cancelling them when
// ctx ends), commits their outcomes and leaves the group.
func (r *Runner) Stop(ctx context.Context) error {
	if r.cancelPoll == nil {
		r.sess.Close()
		return nil
	}
	r.cancelPoll()
	select {
	case <-r.done:
	case <-ctx.Done():
		r.cancelWork()
		<-r.done
	}
	r.cancelWork()
	r.sess.Close()
	return nil
}

// loop polls and commits on one goroutine: a transaction never ends while
// a poll is under way.
func (r *Runner) loop(ctx context.Context) {
	defer close(r.done)
	nextCommit := time.Now().Add(r.cfg.CommitInterval)
	for ctx.Err() == nil {
		pollCtx, cancel := context.WithDeadline(ctx, nextCommit)
		fetches := r.sess.PollRecords(pollCtx, 10_000)
		cancel()
		if fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				r.cfg.Logger.Warn("fetch", "topic", topic, "partition", p, "error", err)
			}
		})
		fetches.EachPartition(r.dispatch)
		if now := time.Now(); !now.Before(nextCommit) {
			r.commit()
			nextCommit = now.Add(r.cfg.CommitInterval)
		}
	}
	// Shutdown: no more fetching; let in-flight work finish, then commit it.
	r.mu.Lock()
	parts := make([]*partition, 0, len(r.parts))
	for _, p := range r.parts {
		parts = append(parts, p)
	}
	r.mu.Unlock()
	for _, p := range parts {
		p.drain()
	}
	r.commit()
}

// assigned starts a worker for each new partition.
func (r *Runner) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for topic, ps := range assigned {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			r.parts[tp] = newPartition(r, tp)
			delete(r.committed, tp)
		}
	}
}

// revoked stops the workers of partitions taken away and waits for their
// handlers; their uncommitted outcomes are aborted with the transaction.
func (r *Runner) revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	var stopping []*partition
	r.mu.Lock()
	for topic, ps := range revoked {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			if part := r.parts[tp]; part != nil {
				stopping = append(stopping, part)
				delete(r.parts, tp)
			}
			delete(r.committed, tp)
		}
	}
	r.mu.Unlock()
	for _, p := range stopping {
		p.stop()
	}
}

// dispatch queues fetched records on their partition's worker.
func (r *Runner) dispatch(fp kgo.FetchTopicPartition) {
	if len(fp.Records) == 0 {
		return
	}
	tp := topicPartition{fp.Topic, fp.Partition}
	r.mu.Lock()
	p := r.parts[tp]
	if p == nil {
		r.mu.Unlock()
		return
	}
	// After an aborted transaction the session fetches again from the
	// committed offsets; records already taken are in flight or done.
	recs := fp.Records
	for len(recs) > 0 && recs[0].Offset < p.win.next {
		recs = recs[1:]
	}
	for _, rec := range recs {
		p.win.add(rec.Offset)
	}
	full := p.win.size() >= r.cfg.MaxWindow && !p.paused
	if full {
		p.paused = true
	}
	r.mu.Unlock()
	if len(recs) > 0 {
		p.enqueue(recs)
	}
	if full {
		r.sess.Client().PauseFetchPartitions(map[string][]int32{tp.topic: {tp.partition}})
	}
}

// finished records a handled record's outcome.
func (r *Runner) finished(p *partition, rec *kgo.Record, outs []*kgo.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.parts[p.tp] != p {
		return // handed back or reset: the record will be handled again
	}
	p.win.finish(rec.Offset)
	for _, out := range outs {
		r.outputs = append(r.outputs, output{p.tp, out})
	}
}

// commit produces the finished records' outcomes and commits each
// partition's committable offset in one transaction. It runs to its end
// even while the runner stops (a stop never leaves a transaction open),
// bounded by a timeout of its own.
func (r *Runner) commit() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.mu.Lock()
	outs := r.outputs
	r.outputs = nil
	// Every transaction carries the offsets of every partition that has
	// any, advanced or not: franz-go treats a transaction that commits no
	// offsets as pre-KIP-447 and holds the next one back for 500ms.
	offsets := make(map[string]map[int32]int64)
	advanced := false
	var resume map[string][]int32
	for tp, p := range r.parts {
		off := p.win.committable()
		if off < 0 {
			continue
		}
		if offsets[tp.topic] == nil {
			offsets[tp.topic] = make(map[int32]int64)
		}
		offsets[tp.topic][tp.partition] = off
		if prev, ok := r.committed[tp]; !ok || off > prev {
			advanced = true
		}
		if p.paused && p.win.size() < r.cfg.MaxWindow/2 {
			p.paused = false
			if resume == nil {
				resume = make(map[string][]int32)
			}
			resume[tp.topic] = append(resume[tp.topic], tp.partition)
		}
	}
	r.mu.Unlock()
	if resume != nil {
		r.sess.Client().ResumeFetchPartitions(resume)
	}
	if len(outs) == 0 && !advanced {
		return
	}

	committed, err := r.transact(ctx, outs, offsets)
	if committed {
		r.mu.Lock()
		for topic, ps := range offsets {
			for p, off := range ps {
				tp := topicPartition{topic, p}
				if r.parts[tp] != nil {
					r.committed[tp] = off
				}
			}
		}
		r.mu.Unlock()
		return
	}
	// Nothing of the transaction is visible. Its outcomes go into the next
	// one, except those of partitions handed back meanwhile: the new owner
	// handles their records again. Fetching restarts at the committed
	// offsets; dispatch skips the records already taken.
	r.cfg.Logger.Warn("transaction aborted; retrying its outcomes in the next one",
		"group", r.cfg.Group, "outputs", len(outs), "error", err)
	r.mu.Lock()
	kept := make([]output, 0, len(outs)+len(r.outputs))
	for _, o := range outs {
		if r.parts[o.from] != nil {
			kept = append(kept, o)
		}
	}
	r.outputs = append(kept, r.outputs...)
	r.mu.Unlock()
}

func (r *Runner) transact(ctx context.Context, outs []output, offsets map[string]map[int32]int64) (bool, error) {
	if err := r.sess.Begin(); err != nil {
		return false, fmt.Errorf("begin transaction: %w", err)
	}
	var mu sync.Mutex
	var produceErr error
	for _, o := range outs {
		r.sess.Produce(ctx, o.rec, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				produceErr = errors.Join(produceErr, err)
				mu.Unlock()
			}
		})
	}
	if err := r.sess.Client().Flush(ctx); err != nil {
		produceErr = errors.Join(produceErr, err)
	}
	mu.Lock()
	failed := produceErr
	mu.Unlock()
	if failed != nil {
		if _, err := r.sess.End(ctx, kgo.TryAbort); err != nil {
			failed = errors.Join(failed, err)
		}
		return false, fmt.Errorf("produce outcomes: %w", failed)
	}
	commitCtx := kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		setTxnOffsets(req, offsets)
		return nil
	})
	committed, err := r.sess.End(commitCtx, kgo.TryCommit)
	if err != nil {
		return false, fmt.Errorf("commit transaction: %w", err)
	}
	if !committed {
		return false, ErrTxnAborted
	}
	return true, nil
}

// setTxnOffsets replaces the offsets the session would commit (everything
// fetched) with the runner's committable offsets.
func setTxnOffsets(req *kmsg.TxnOffsetCommitRequest, offsets map[string]map[int32]int64) {
	existing := make(map[string]kmsg.TxnOffsetCommitRequestTopic, len(req.Topics))
	for _, t := range req.Topics {
		existing[t.Topic] = t
	}
	req.Topics = req.Topics[:0]
	for topic, ps := range offsets {
		t, ok := existing[topic]
		if !ok {
			t = kmsg.NewTxnOffsetCommitRequestTopic()
			t.Topic = topic
		}
		t.Partitions = t.Partitions[:0]
		for p, off := range ps {
			rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			rp.Partition = p
			rp.Offset = off
			rp.LeaderEpoch = -1
			rp.Metadata = &req.MemberID
			t.Partitions = append(t.Partitions, rp)
		}
		req.Topics = append(req.Topics, t)
	}
}
