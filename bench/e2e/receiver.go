package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// recorder notes when each job of a phase reached the receiver.
type recorder struct {
	lat      []int64 // ns from enqueue to delivery; -1 = not yet
	received atomic.Int64
	dups     atomic.Int64
	done     chan struct{}
	once     sync.Once
}

func newRecorder(n int) *recorder {
	r := &recorder{lat: make([]int64, n), done: make(chan struct{})}
	for i := range r.lat {
		r.lat[i] = -1
	}
	return r
}

func (r *recorder) record(seq int, sent int64) {
	if seq < 0 || seq >= len(r.lat) {
		return
	}
	if !atomic.CompareAndSwapInt64(&r.lat[seq], -1, time.Now().UnixNano()-sent) {
		r.dups.Add(1)
		return
	}
	if r.received.Add(1) == int64(len(r.lat)) {
		r.once.Do(func() { close(r.done) })
	}
}

func (r *recorder) wait(d time.Duration) bool {
	select {
	case <-r.done:
		return true
	case <-time.After(d):
		return false
	}
}

// percentiles of the recorded latencies from index from on.
func (r *recorder) percentiles(from int) (p50, p99 time.Duration) {
	return percentiles(r.lat[from:])
}

func percentiles(ns []int64) (p50, p99 time.Duration) {
	var xs []int64
	for _, v := range ns {
		if v >= 0 {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return 0, 0
	}
	slices.Sort(xs)
	at := func(q float64) time.Duration { return time.Duration(xs[min(len(xs)-1, int(q*float64(len(xs))))]) }
	return at(0.50), at(0.99)
}

// receiver is the no-op webhook endpoint: it answers 204 and records.
type receiver struct {
	url string
	cur atomic.Pointer[recorder]
	srv *http.Server
	// failFirst makes the first attempt of every tenth job answer 503.
	failFirst atomic.Bool
	failed    sync.Map // seq -> true once failed
}

type benchPayload struct {
	Seq  int   `json:"seq"`
	Sent int64 `json:"sent"`
}

func startReceiver() *receiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	r := &receiver{url: "http://" + ln.Addr().String() + "/hook"}
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var p benchPayload
		if json.Unmarshal(body, &p) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if r.failFirst.Load() && p.Seq%10 == 0 {
			if _, seen := r.failed.LoadOrStore(p.Seq, true); !seen {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		if rec := r.cur.Load(); rec != nil {
			rec.record(p.Seq, p.Sent)
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r
}
