package projections

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// CatchUpConfig configures Store.CatchUp.
type CatchUpConfig struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// Topic is the events topic to fold. Required.
	Topic string
	// MaxBatch is the most records applied in one pipeline. Default 1000.
	MaxBatch int
	// ClientOpts are added to the Kafka client (dialers, logging).
	ClientOpts []kgo.Opt
}

// WithDefaults returns c with zero fields set to their defaults.
func (c CatchUpConfig) WithDefaults() CatchUpConfig {
	if c.MaxBatch == 0 {
		c.MaxBatch = 1000
	}
	return c
}

// Validate reports every problem with c.
func (c CatchUpConfig) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("CatchUpConfig.Brokers: required"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("CatchUpConfig.Topic: required"))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, errors.New("CatchUpConfig.MaxBatch: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	return nil
}

// CatchUpResult is what Store.CatchUp read.
type CatchUpResult struct {
	// Partitions is the number of partitions of the topic.
	Partitions int
	// Records is the number of event records read and applied.
	Records int64
}

// CatchUp folds the events topic into the read model, without a consumer
// group, from each partition's checkpoint (the start of the log when it
// has none) up to the end of the log as it stood when CatchUp began: the
// last stable offset, so committed records only, as the Projector reads
// them. It returns once every partition got there. Together with Rebuild
// it rebuilds the read model from the log; the result is the one a
// Projector folding the same records reaches, checkpoints included, so
// Projectors running meanwhile or afterwards carry on from it.
//
// CatchUp returns ErrRebuilding while Rebuild runs and ErrEpochChanged
// when the read model is reset under it (run it again).
func (s *Store) CatchUp(ctx context.Context, cfg CatchUpConfig) (CatchUpResult, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return CatchUpResult{}, err
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records tell how far a partition was read when its
		// last records are transaction markers.
		kgo.KeepControlRecords(),
	}, cfg.ClientOpts...)...)
	if err != nil {
		return CatchUpResult{}, fmt.Errorf("projections: new client: %w", err)
	}
	defer cl.Close()

	// Step 1: where the log ends now, per partition.
	ends, starts, err := logBounds(ctx, kadm.NewClient(cl), cfg.Topic)
	if err != nil {
		return CatchUpResult{}, err
	}
	res := CatchUpResult{Partitions: len(ends)}
	// Step 2: where the read model stands (this also fixes the epoch the
	// folds below write to).
	ckpts, err := s.checkpoints(ctx, cfg.Topic, slices.Sorted(maps.Keys(ends)))
	if err != nil {
		return res, err
	}
	// Step 3: read every partition not yet at its end.
	pos := make(map[int32]int64, len(ends))
	offsets := make(map[int32]kgo.Offset)
	for p, end := range ends {
		pos[p] = starts[p]
		off, ok := ckpts[p]
		if ok {
			pos[p] = max(off, starts[p])
		}
		if starts[p] > 0 && (!ok || off < starts[p]) {
			// Retention removed records the read model never folded: the
			// jobs they created cannot come back.
			s.cfg.Logger.ErrorContext(ctx, "the log no longer holds the start of this partition; jobs created there are missing from the read model",
				"topic", cfg.Topic, "partition", p, "log_start", starts[p], "checkpoint", off)
		}
		if pos[p] < end {
			offsets[p] = kgo.NewOffset().At(pos[p])
		}
	}
	if len(offsets) == 0 {
		return res, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topic: offsets})
	// Step 4: apply batches until every partition reached its end.
	pending := len(offsets)
	for pending > 0 {
		fetches := cl.PollRecords(ctx, cfg.MaxBatch)
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("catch up with %s: %w", cfg.Topic, err)
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			e := errs[0]
			return res, fmt.Errorf("fetch %s/%d: %w", e.Topic, e.Partition, e.Err)
		}
		var recs []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			before := pos[r.Partition]
			pos[r.Partition] = max(before, r.Offset+1)
			if before < ends[r.Partition] && pos[r.Partition] >= ends[r.Partition] {
				pending--
			}
			if !r.Attrs.IsControl() {
				recs = append(recs, r)
			}
		})
		if err := s.Apply(ctx, recs); err != nil {
			return res, fmt.Errorf("catch up with %s: %w", cfg.Topic, err)
		}
		res.Records += int64(len(recs))
	}
	return res, nil
}

// logBounds returns the last stable offset and the log start offset of
// every partition of topic.
func logBounds(ctx context.Context, adm *kadm.Client, topic string) (ends, starts map[int32]int64, err error) {
	committed, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	first, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = first.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	ends, starts = make(map[int32]int64), make(map[int32]int64)
	committed.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	first.Each(func(o kadm.ListedOffset) { starts[o.Partition] = o.Offset })
	if len(ends) == 0 {
		return nil, nil, fmt.Errorf("list end offsets of %s: topic not found", topic)
	}
	return ends, starts, nil
}
