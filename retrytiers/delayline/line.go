// Package delayline runs the tiers role: it serves the delay lines
// (sluice.retry.<delay>), appending each timer's event to sluice.events once
// it is due, or moving it to the next line when it is not.
//
// Every record of one line waits the same time, so arrival order is due
// order. Each partition is served in offset order by eventlog.Runner: the
// handler waits until its record's release time (append time plus the
// line's delay), and the runner pauses fetching a partition whose window of
// waiting records is full. No partition's wait holds up another's. A timer
// due within less than the shortest line goes round the shortest line once
// more, so a job runs late by less than that line's delay, never early.
//
// A released timer's event and the line's offset commit in one
// transaction, and records finish in offset order, so a crash releases
// every due timer exactly once.
package delayline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	"github.com/sluicehq/sluice/retrytiers"
)

// Observer hears which timer heads each partition of a line; cmd turns it
// into the oldest-waiting-timer age per tier. Its methods must not block.
type Observer interface {
	// Waiting reports that the timer appended at appended heads a partition.
	Waiting(topic string, partition int32, appended time.Time)
	// Released reports that the partition's head timer was released.
	Released(topic string, partition int32)
}

type nopObserver struct{}

func (nopObserver) Waiting(string, int32, time.Time) {}
func (nopObserver) Released(string, int32)           {}

// Config configures a Line.
type Config struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// Topics names the delay lines and the events topic. Required.
	Topics eventlog.Topics
	// TransactionalID of the runner; stable per node. Default: generated.
	TransactionalID string
	// ClientOpts are added to the Kafka client.
	ClientOpts []kgo.Opt
	// Observer hears about waiting timers. Default: none.
	Observer Observer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Line serves every delay line.
type Line struct {
	cfg    Config
	tiers  map[string]time.Duration
	runner *eventlog.Runner
}

// New returns a Line; Start begins serving.
func New(cfg Config) (*Line, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("delayline: Config.Brokers: required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	l := &Line{cfg: cfg, tiers: make(map[string]time.Duration)}
	for _, d := range eventlog.RetryTiers {
		l.tiers[cfg.Topics.Retry(d)] = d
	}
	r, err := eventlog.NewRunner(eventlog.RunnerConfig{
		Brokers:         cfg.Brokers,
		Group:           cfg.Topics.Prefix + "tiers",
		Topics:          cfg.Topics.RetryTopics(),
		Handler:         l.handle,
		TransactionalID: cfg.TransactionalID,
		// Records of one line come due in offset order, so one handler
		// per partition serves them as fast as they come due, and records
		// finish in offset order: the committed offset is always just past
		// the last released timer, so no timer is released twice. The
		// window bounds the timers held in memory.
		MaxInFlight: 1,
		MaxWindow:   1024,
		ClientOpts:  cfg.ClientOpts,
		Logger:      cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	l.runner = r
	return l, nil
}

// Start begins serving the lines.
func (l *Line) Start(ctx context.Context) error { return l.runner.Start(ctx) }

// Stop stops serving; timers waiting are picked up again at the next start.
func (l *Line) Stop(ctx context.Context) error { return l.runner.Stop(ctx) }

// handle waits until the timer in rec is due for release from its line,
// then returns its event, or the timer again on the next line.
func (l *Line) handle(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error) {
	var tm eventv1.Timer
	if err := proto.Unmarshal(rec.Value, &tm); err != nil || tm.Event == nil || tm.DueAt == nil {
		l.cfg.Logger.ErrorContext(ctx, "skip undecodable timer", "topic", rec.Topic, "offset", rec.Offset, "error", err)
		return nil, nil
	}
	due := tm.DueAt.AsTime()
	release := rec.Timestamp.Add(l.tiers[rec.Topic])
	if release.After(due) {
		release = due
	}
	l.cfg.Observer.Waiting(rec.Topic, rec.Partition, rec.Timestamp)
	if err := l.wait(ctx, release); err != nil {
		return nil, err
	}
	l.cfg.Observer.Released(rec.Topic, rec.Partition)
	if tier, ok := retrytiers.Hop(due.Sub(l.cfg.Now())); ok {
		out, err := Encode(l.cfg.Topics.Retry(tier), &tm)
		if err != nil {
			return nil, err
		}
		return []*kgo.Record{out}, nil
	}
	ev := proto.CloneOf(tm.Event)
	ev.OccurredAt = timestamppb.New(l.cfg.Now())
	out, err := eventlog.EncodeEvent(l.cfg.Topics.Events(), ev)
	if err != nil {
		return nil, err
	}
	return []*kgo.Record{out}, nil
}

// wait sleeps until t or until ctx ends.
func (l *Line) wait(ctx context.Context, t time.Time) error {
	d := t.Sub(l.cfg.Now())
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Schedule returns the record that makes ev happen at due: a timer on the
// line Hop picks, or ev itself on the events topic when due has come.
func Schedule(topics eventlog.Topics, ev *eventv1.Event, due, now time.Time) (*kgo.Record, error) {
	tier, ok := retrytiers.Hop(due.Sub(now))
	if !ok {
		return eventlog.EncodeEvent(topics.Events(), ev)
	}
	return Encode(topics.Retry(tier), &eventv1.Timer{Event: ev, DueAt: timestamppb.New(due)})
}

// Encode turns a timer into a record of topic, keyed by its job.
func Encode(topic string, tm *eventv1.Timer) (*kgo.Record, error) {
	value, err := proto.Marshal(tm)
	if err != nil {
		return nil, fmt.Errorf("encode timer for job %s: %w", tm.Event.GetJobId(), err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(tm.Event.GetJobId()), Value: value}, nil
}
