package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// AppenderConfig configures an Appender.
type AppenderConfig struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// TransactionalID of the producer behind AppendAtomic. Two live
	// appenders must not share one. Default "sluice-appender-" + NewID().
	TransactionalID string
	// Linger is how long the producer waits to fill a batch. Default 0:
	// records leave at once, batched only behind requests in flight.
	Linger time.Duration
	// ClientOpts are added to both clients (hooks, dialers, logging).
	ClientOpts []kgo.Opt
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c AppenderConfig) WithDefaults() AppenderConfig {
	if c.TransactionalID == "" {
		c.TransactionalID = "sluice-appender-" + NewID()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with c.
func (c AppenderConfig) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("eventlog: AppenderConfig.Brokers: required")
	}
	return nil
}

// Appender appends records durably: Append through an idempotent acks=all
// producer, AppendAtomic in a Kafka transaction. Concurrent AppendAtomic
// calls are committed together in one transaction (group commit), each
// still all or nothing: a failed transaction fails every call in it.
type Appender struct {
	cfg AppenderConfig
	cl  *kgo.Client
	txn *kgo.Client

	batches chan *atomicBatch
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

type atomicBatch struct {
	recs []*kgo.Record
	err  chan error
}

// NewAppender connects an Appender. Close releases it.
func NewAppender(cfg AppenderConfig) (*Appender, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchMaxBytes(MaxRecordBytes),
		kgo.RetryBackoffFn(retryBackoff),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}, cfg.ClientOpts...)
	cl, err := kgo.NewClient(base...)
	if err != nil {
		return nil, fmt.Errorf("eventlog: new producer: %w", err)
	}
	txn, err := kgo.NewClient(append(base,
		kgo.TransactionalID(cfg.TransactionalID),
		kgo.TransactionTimeout(10*time.Second),
	)...)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("eventlog: new transactional producer: %w", err)
	}
	a := &Appender{
		cfg:     cfg,
		cl:      cl,
		txn:     txn,
		batches: make(chan *atomicBatch, 256),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go a.commitLoop()
	return a, nil
}

// Client returns the idempotent producer client, for metadata requests.
func (a *Appender) Client() *kgo.Client { return a.cl }

// Append produces recs and returns once all were acknowledged, or the
// first error. Records with different keys may land in different
// partitions; a failure may leave some of them appended (use AppendAtomic
// when that matters).
func (a *Appender) Append(ctx context.Context, recs ...*kgo.Record) error {
	return a.cl.ProduceSync(ctx, recs...).FirstErr()
}

// AppendEach produces recs, each on its own, and returns once all were
// acknowledged or failed: errs[i] is recs[i]'s error, nil once it is in
// the log. It is for records that stand alone, where a transaction would
// only add latency.
func (a *Appender) AppendEach(ctx context.Context, recs []*kgo.Record) (errs []error) {
	errs = make([]error, len(recs))
	for i, r := range a.cl.ProduceSync(ctx, recs...) {
		errs[i] = r.Err
	}
	return errs
}

// AppendAtomic produces recs in one transaction: all become visible to
// committed readers, or none do.
func (a *Appender) AppendAtomic(ctx context.Context, recs []*kgo.Record) error {
	b := &atomicBatch{recs: recs, err: make(chan error, 1)}
	select {
	case a.batches <- b:
	case <-a.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-b.err:
		return err
	case <-a.done:
		return ErrClosed
	case <-ctx.Done():
		// The transaction may still commit; the caller learns nothing.
		return ctx.Err()
	}
}

// commitLoop runs transactions, each holding every batch waiting when it
// starts.
func (a *Appender) commitLoop() {
	defer close(a.done)
	for {
		var group []*atomicBatch
		select {
		case b := <-a.batches:
			group = append(group, b)
		case <-a.stop:
			return
		}
	fill:
		for len(group) < 64 {
			select {
			case b := <-a.batches:
				group = append(group, b)
			default:
				break fill
			}
		}
		err := a.commit(group)
		for _, b := range group {
			b.err <- err
		}
	}
}

func (a *Appender) commit(group []*atomicBatch) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.txn.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	var mu sync.Mutex
	var produceErr error
	for _, b := range group {
		for _, r := range b.recs {
			a.txn.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					produceErr = errors.Join(produceErr, err)
					mu.Unlock()
				}
			})
		}
	}
	flushErr := a.txn.Flush(ctx)
	mu.Lock()
	failed := errors.Join(flushErr, produceErr)
	mu.Unlock()
	if failed != nil {
		if err := a.txn.AbortBufferedRecords(ctx); err != nil {
			a.cfg.Logger.Error("abort buffered records", "error", err)
		}
		if err := a.txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
			a.cfg.Logger.Error("abort transaction", "error", err)
		}
		return fmt.Errorf("append in transaction: %w", failed)
	}
	if err := a.txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// Close stops the appender. Calls in flight get ErrClosed or their result.
func (a *Appender) Close() {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
		a.txn.Close()
		a.cl.Close()
	})
}
