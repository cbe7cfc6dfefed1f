package eventlog

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestBacklogServesHigherClassesFirstEachInOffsetOrder(t *testing.T) {
	prio := func(p string) []kgo.RecordHeader {
		if p == "" {
			return nil
		}
		return []kgo.RecordHeader{{Key: HeaderPriority, Value: []byte(p)}}
	}
	var b backlog
	in := []struct {
		offset int64
		class  string
	}{{0, "low"}, {1, ""}, {2, "high"}, {3, "low"}, {4, "high"}, {5, ""}}
	for _, r := range in {
		b.push(&kgo.Record{Offset: r.offset, Headers: prio(r.class)}, RecordPriority)
	}
	var got []int64
	for rec := b.pop(); rec != nil; rec = b.pop() {
		got = append(got, rec.Offset)
	}
	want := []int64{2, 4, 1, 5, 0, 3}
	if len(got) != len(want) {
		t.Fatalf("popped %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("popped %v, want %v", got, want)
		}
	}
}

func TestBacklogWithoutPriorityKeepsOffsetOrder(t *testing.T) {
	var b backlog
	for i := range 1000 {
		b.push(&kgo.Record{Offset: int64(i), Headers: []kgo.RecordHeader{{Key: HeaderPriority, Value: []byte("high")}}}, nil)
		if i%3 == 2 { // interleave pops, as a busy partition does
			b.pop()
		}
	}
	last := int64(-1)
	for rec := b.pop(); rec != nil; rec = b.pop() {
		if rec.Offset <= last {
			t.Fatalf("offset %d after %d", rec.Offset, last)
		}
		last = rec.Offset
	}
	if last != 999 {
		t.Fatalf("last offset %d, want 999", last)
	}
	if n := len(b.classes[PriorityNormal].recs); n > 0 {
		t.Fatalf("drained fifo still holds %d slots", n)
	}
}
