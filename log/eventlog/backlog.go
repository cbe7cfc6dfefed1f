package eventlog

import "github.com/twmb/franz-go/pkg/kgo"

// backlog is a partition's fetched records not yet handed to a handler,
// in one FIFO per priority class.
type backlog struct {
	classes [numPriorities]fifo
}

func (b *backlog) push(rec *kgo.Record, priority func(*kgo.Record) int) {
	class := PriorityNormal
	if priority != nil {
		class = min(max(priority(rec), 0), numPriorities-1)
	}
	b.classes[class].push(rec)
}

// pop returns the oldest record of the highest class, or nil.
func (b *backlog) pop() *kgo.Record {
	for i := range b.classes {
		if rec := b.classes[i].pop(); rec != nil {
			return rec
		}
	}
	return nil
}

// fifo is a queue of records that reuses its storage.
type fifo struct {
	recs []*kgo.Record
	head int
}

func (f *fifo) push(rec *kgo.Record) {
	// Reclaim the popped front once it is half the storage, so a queue
	// that never empties does not grow without bound.
	if f.head > 0 && f.head >= len(f.recs)/2 {
		n := copy(f.recs, f.recs[f.head:])
		clear(f.recs[n:])
		f.recs, f.head = f.recs[:n], 0
	}
	f.recs = append(f.recs, rec)
}

func (f *fifo) pop() *kgo.Record {
	if f.head == len(f.recs) {
		return nil
	}
	rec := f.recs[f.head]
	f.recs[f.head] = nil
	f.head++
	if f.head == len(f.recs) {
		f.recs, f.head = f.recs[:0], 0
	}
	return rec
}
