package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// FollowerConfig configures a Follower.
type FollowerConfig struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// Topic to follow, from its start. Required.
	Topic string
	// Fold applies one record. It is called from one goroutine, in offset
	// order per partition; a record with an empty value is a tombstone.
	// Required.
	Fold func(*kgo.Record)
	// ClientOpts are added to the client.
	ClientOpts []kgo.Opt
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Follower folds a (compacted) topic into memory: every committed record
// from the start, then every new one, and appends to it. The config topic's
// readers (tenants, keys, queues, endpoints, sources) are followers.
type Follower struct {
	cfg FollowerConfig
	cl  *kgo.Client

	mu      sync.Mutex
	applied map[int32]int64 // next offset folded, per partition
	changed chan struct{}   // closed and replaced after every fetch folded

	cancel context.CancelFunc
	done   chan struct{}
}

// NewFollower creates a Follower; Start begins folding.
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	var errs []error
	if len(cfg.Brokers) == 0 {
		errs = append(errs, errors.New("eventlog: FollowerConfig.Brokers: required"))
	}
	if cfg.Topic == "" {
		errs = append(errs, errors.New("eventlog: FollowerConfig.Topic: required"))
	}
	if cfg.Fold == nil {
		errs = append(errs, errors.New("eventlog: FollowerConfig.Fold: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// A transaction's commit marker can be a partition's last
		// record: the follower must see it to know it is current.
		kgo.KeepControlRecords(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
	}, cfg.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("eventlog: follow %s: new client: %w", cfg.Topic, err)
	}
	return &Follower{cfg: cfg, cl: cl, applied: make(map[int32]int64), changed: make(chan struct{})}, nil
}

// Start folds the topic up to its current end, then keeps folding in the
// background. It returns once the follower is current.
func (f *Follower) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	f.done = make(chan struct{})
	go f.run(runCtx)
	return f.Sync(ctx)
}

// Stop ends folding and closes the client.
func (f *Follower) Stop(context.Context) error {
	if f.cancel != nil {
		f.cancel()
		<-f.done
	}
	f.cl.Close()
	return nil
}

// Sync waits until everything committed to the topic before the call is
// folded.
func (f *Follower) Sync(ctx context.Context) error {
	ends, err := kadm.NewClient(f.cl).ListEndOffsets(ctx, f.cfg.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list end offsets of %s: %w", f.cfg.Topic, err)
	}
	for {
		f.mu.Lock()
		behind := false
		ends.Each(func(o kadm.ListedOffset) {
			if f.applied[o.Partition] < o.Offset {
				behind = true
			}
		})
		changed := f.changed
		f.mu.Unlock()
		if !behind {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("sync %s: %w", f.cfg.Topic, ctx.Err())
		}
	}
}

// Append produces one record (a nil value is a tombstone) and returns once
// this follower has folded it.
func (f *Follower) Append(ctx context.Context, key string, value []byte) error {
	rec := &kgo.Record{Topic: f.cfg.Topic, Key: []byte(key), Value: value}
	if err := f.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("append %s to %s: %w", key, f.cfg.Topic, err)
	}
	return f.Sync(ctx)
}

// Changed returns a channel closed once the next fetch is folded.
func (f *Follower) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Client is the follower's client, for metadata requests.
func (f *Follower) Client() *kgo.Client { return f.cl }

func (f *Follower) run(ctx context.Context) {
	defer close(f.done)
	for {
		fs := f.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			f.cfg.Logger.Warn("fetch", "topic", topic, "partition", p, "error", err)
		})
		applied := make(map[int32]int64)
		fs.EachRecord(func(rec *kgo.Record) {
			if !rec.Attrs.IsControl() {
				f.cfg.Fold(rec)
			}
			applied[rec.Partition] = rec.Offset + 1
		})
		f.mu.Lock()
		for p, o := range applied {
			f.applied[p] = max(f.applied[p], o)
		}
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}
}
