package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a Projector.
type Config struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// Topic is the events topic to fold. Required.
	Topic string
	// Group is the consumer group. Default "sluice-projections".
	Group string
	// MaxBatch is the most records applied in one transaction. Default
	// 1000.
	MaxBatch int
	// MaxBackoff caps the wait between retries while Redis is down.
	// Default 5s.
	MaxBackoff time.Duration
	// ClientOpts are added to the Kafka client (hooks, dialers, logging).
	ClientOpts []kgo.Opt
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Group == "" {
		c.Group = "sluice-projections"
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 1000
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
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("Config.Brokers: required"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("Config.Topic: required"))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, errors.New("Config.MaxBatch: must not be negative"))
	}
	if c.MaxBackoff < 0 {
		errs = append(errs, errors.New("Config.MaxBackoff: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	return nil
}

// Projector keeps a Store up to date with the events topic: it consumes
// the topic in a consumer group (committed records only) and applies
// every polled batch with Store.Apply. Each assigned partition starts at
// its checkpoint in Redis, or at the start of the log when Redis has none,
// so an empty Redis is rebuilt from the log by itself. Group offsets are
// never committed: the checkpoints are the only position. A batch Redis
// refuses is retried with backoff until it is applied, never skipped;
// when the read model was reset under it (ErrEpochChanged), the Projector
// rejoins the group and starts over from the checkpoints.
type Projector struct {
	cfg   Config
	store *Store

	cancelPoll context.CancelFunc
	cancelWork context.CancelFunc
	done       chan struct{}
}

// NewProjector returns a Projector that folds cfg.Topic into store.
func NewProjector(store *Store, cfg Config) (*Projector, error) {
	if store == nil {
		panic("projections: NewProjector: nil store")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Projector{cfg: cfg, store: store, done: make(chan struct{})}, nil
}

// Start joins the group and begins consuming in the background; it
// returns once the consumer runs. ctx's values reach the consumer, its
// cancellation does not: Stop ends it. A Projector starts once.
func (p *Projector) Start(ctx context.Context) error {
	if p.cancelPoll != nil {
		return errors.New("projections: Projector started twice")
	}
	cl, err := p.newClient()
	if err != nil {
		return err
	}
	pollCtx, cancelPoll := context.WithCancel(context.WithoutCancel(ctx))
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	p.cancelPoll, p.cancelWork = cancelPoll, cancelWork
	go p.run(pollCtx, workCtx, cl)
	return nil
}

// Stop stops polling, lets the batch being applied finish (cancelling it
// when ctx ends first: a cancelled batch is applied again on the next
// start), leaves the group and returns once the consumer has exited.
func (p *Projector) Stop(ctx context.Context) error {
	if p.cancelPoll == nil {
		return nil
	}
	p.cancelPoll()
	var err error
	select {
	case <-p.done:
	case <-ctx.Done():
		p.cancelWork()
		<-p.done
		err = fmt.Errorf("stop projector: %w", ctx.Err())
	}
	p.cancelWork()
	return err
}

func (p *Projector) newClient() (*kgo.Client, error) {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(p.cfg.Brokers...),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.AdjustFetchOffsetsFn(p.startOffsets),
	}, p.cfg.ClientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("projections: new consumer for group %s: %w", p.cfg.Group, err)
	}
	return cl, nil
}

// run consumes until pollCtx ends, with a new client after every reset of
// the read model.
func (p *Projector) run(pollCtx, workCtx context.Context, cl *kgo.Client) {
	defer close(p.done)
	for {
		err := p.consume(pollCtx, workCtx, cl)
		cl.Close()
		if !errors.Is(err, ErrEpochChanged) || pollCtx.Err() != nil {
			return
		}
		p.cfg.Logger.InfoContext(workCtx, "read model was reset; rejoining to read from the checkpoints", "group", p.cfg.Group)
		if cl = p.restart(pollCtx); cl == nil {
			return
		}
	}
}

// restart returns a new client, or nil when ctx ends first.
func (p *Projector) restart(ctx context.Context) *kgo.Client {
	for {
		cl, err := p.newClient()
		if err == nil {
			return cl
		}
		p.cfg.Logger.ErrorContext(ctx, "restart consumer", "error", err)
		if !sleep(ctx, p.cfg.MaxBackoff) {
			return nil
		}
	}
}

// consume polls and applies batches until pollCtx ends or the read model
// was reset.
func (p *Projector) consume(pollCtx, workCtx context.Context, cl *kgo.Client) error {
	// A reset seen while no records arrive ends the poll (epochwatch.go).
	watchCtx, reset := context.WithCancelCause(pollCtx)
	watched := make(chan struct{})
	go func() { defer close(watched); p.watchEpoch(watchCtx, reset) }()
	defer func() { reset(nil); <-watched }()
	for {
		fetches := cl.PollRecords(watchCtx, p.cfg.MaxBatch)
		if watchCtx.Err() != nil || fetches.IsClientClosed() {
			return context.Cause(watchCtx)
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			p.cfg.Logger.WarnContext(workCtx, "fetch events", "topic", topic, "partition", partition, "error", err)
		})
		if err := p.apply(pollCtx, workCtx, fetches.Records()); err != nil {
			return err
		}
	}
}

// apply applies recs, retrying with backoff while Redis fails, until it
// succeeds, the read model was reset, or pollCtx ends.
func (p *Projector) apply(pollCtx, workCtx context.Context, recs []*kgo.Record) error {
	backoff := 50 * time.Millisecond
	for {
		err := p.store.Apply(workCtx, recs)
		if err == nil || errors.Is(err, ErrEpochChanged) {
			return err
		}
		p.cfg.Logger.WarnContext(workCtx, "apply events; retrying", "records", len(recs), "backoff", backoff, "error", err)
		if !sleep(pollCtx, backoff) {
			return pollCtx.Err()
		}
		backoff = min(2*backoff, p.cfg.MaxBackoff)
	}
}

// startOffsets is the AdjustFetchOffsetsFn: every newly assigned partition
// starts at its checkpoint, or at the start of the log. While Redis cannot
// answer it retries, until the group session ends.
func (p *Projector) startOffsets(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for topic, parts := range assigned {
		ckpts, err := p.checkpoints(ctx, topic, slices.Sorted(maps.Keys(parts)))
		if err != nil {
			return nil, err
		}
		for part := range parts {
			off, ok := ckpts[part]
			if ok {
				parts[part] = kgo.NewOffset().At(off).WithEpoch(-1)
			} else {
				parts[part] = kgo.NewOffset().AtStart()
			}
			p.cfg.Logger.DebugContext(ctx, "start partition", "topic", topic, "partition", part, "checkpoint", off, "has_checkpoint", ok)
		}
	}
	return assigned, nil
}

// checkpoints reads the checkpoints of topic's partitions, retrying with
// backoff until it succeeds or ctx ends.
func (p *Projector) checkpoints(ctx context.Context, topic string, parts []int32) (map[int32]int64, error) {
	backoff := 50 * time.Millisecond
	for {
		ckpts, err := p.store.checkpoints(ctx, topic, parts)
		if err == nil {
			return ckpts, nil
		}
		p.cfg.Logger.WarnContext(ctx, "read checkpoints; retrying", "topic", topic, "backoff", backoff, "error", err)
		if !sleep(ctx, backoff) {
			return nil, fmt.Errorf("read checkpoints of %s: %w", topic, ctx.Err())
		}
		backoff = min(2*backoff, p.cfg.MaxBackoff)
	}
}

// sleep waits for d and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
