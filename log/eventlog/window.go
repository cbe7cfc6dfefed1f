package eventlog

// window tracks the records of one partition from fetch until their
// handler finished. Records enter in offset order; they may finish in any
// order. The committable offset is the lowest offset not yet finished.
type window struct {
	pending []windowEntry // in offset order; finished entries at the head are dropped
	next    int64         // one past the highest offset added; -1 before any
}

type windowEntry struct {
	offset int64
	done   bool
}

func newWindow() *window { return &window{next: -1} }

// add records that offset was fetched.
func (w *window) add(offset int64) {
	w.pending = append(w.pending, windowEntry{offset: offset})
	w.next = offset + 1
}

// finish marks offset done. Offsets not in the window are ignored.
func (w *window) finish(offset int64) {
	// Binary search: entries are sorted by offset.
	lo, hi := 0, len(w.pending)
	for lo < hi {
		mid := (lo + hi) / 2
		if w.pending[mid].offset < offset {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(w.pending) && w.pending[lo].offset == offset {
		w.pending[lo].done = true
	}
	n := 0
	for n < len(w.pending) && w.pending[n].done {
		n++
	}
	if n > 0 {
		w.pending = w.pending[n:]
		if len(w.pending) == 0 {
			w.pending = nil
		}
	}
}

// committable is the offset to commit: the lowest unfinished offset, or one
// past the last fetched offset when everything finished; -1 when nothing
// was fetched.
func (w *window) committable() int64 {
	if len(w.pending) > 0 {
		return w.pending[0].offset
	}
	return w.next
}

// size is the number of records fetched and not yet committable.
func (w *window) size() int { return len(w.pending) }
