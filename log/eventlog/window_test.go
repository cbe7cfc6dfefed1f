package eventlog

import "testing"

func TestWindow(t *testing.T) {
	t.Parallel()
	w := newWindow()
	if got := w.committable(); got != -1 {
		t.Fatalf("empty window: committable got %d, want -1", got)
	}
	for _, o := range []int64{10, 11, 13, 14} { // 12 is a gap (a transaction marker)
		w.add(o)
	}
	steps := []struct {
		finish int64
		want   int64
		size   int
	}{
		{11, 10, 4},
		{14, 10, 4},
		{10, 13, 2},
		{99, 13, 2}, // unknown offsets change nothing
		{13, 15, 0},
	}
	for _, s := range steps {
		w.finish(s.finish)
		if got := w.committable(); got != s.want {
			t.Errorf("after finish(%d): committable got %d, want %d", s.finish, got, s.want)
		}
		if got := w.size(); got != s.size {
			t.Errorf("after finish(%d): size got %d, want %d", s.finish, got, s.size)
		}
	}
}
