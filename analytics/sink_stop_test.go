package analytics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// scratchDB is a database of its own on the ClickHouse from the
// environment, dropped when the test ends; it skips without one.
func scratchDB(t *testing.T) (dsn, name string) {
	t.Helper()
	dsn = os.Getenv("SLUICE_TEST_CLICKHOUSE_DSN")
	if dsn == "" {
		t.Skip("CLICKHOUSE NOT TESTED: SLUICE_TEST_CLICKHOUSE_DSN is unset (the README's test command starts ClickHouse and sets it)")
	}
	name = fmt.Sprintf("sluice_stop_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		conn, err := Open(DBConfig{DSN: dsn})
		if err != nil {
			return
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
	})
	return dsn, name
}

// enqueued returns n job.enqueued records of distinct jobs.
func enqueued(t *testing.T, topic string, from, n int) []*kgo.Record {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		ev := eventlog.NewEvent(eventlog.Meta{TenantID: "t1", JobID: fmt.Sprintf("job%d", i), EventID: fmt.Sprintf("ev%d", i), OccurredAt: time.Now()},
			&eventv1.JobEnqueued{Spec: &eventv1.JobSpec{Queue: "q", Payload: []byte(`{}`), Target: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: "http://a.example/"}}}})
		rec, err := eventlog.EncodeEvent(topic, ev)
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition = 0
		recs = append(recs, rec)
	}
	return recs
}

func produceTo(t *testing.T, c *eventlogtest.Cluster, recs []*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// committedOffset is what group committed on partition 0 of topic.
func committedOffset(t *testing.T, adm *kadm.Client, group, topic string) int64 {
	t.Helper()
	offs, err := adm.FetchOffsets(context.Background(), group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	o, ok := offs.Lookup(topic, 0)
	if !ok || o.Err != nil {
		return 0
	}
	return o.At
}

// A batch commits its own records' offsets, not those of records polled
// after it: records fetched while stopping are never committed unless
// they are in ClickHouse.
func TestSinkCommitsOnlyWhatItInserted(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		dsn, db := scratchDB(t)
		group := c.Group("analytics")
		s, err := NewSink(SinkConfig{DB: DBConfig{DSN: dsn, Database: db}, Brokers: c.Brokers, Topic: c.Topics.Events(), Group: group})
		if err != nil {
			t.Fatal(err)
		}
		defer s.conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := Migrate(ctx, s.conn, db, time.Now()); err != nil {
			t.Fatal(err)
		}
		produceTo(t, c, enqueued(t, c.Topics.Events(), 0, 6))
		s.cl, err = s.newClient()
		if err != nil {
			t.Fatal(err)
		}
		defer func() { s.cl.AllowRebalance(); s.cl.Close() }()
		var polled []*kgo.Record
		for len(polled) < 6 && ctx.Err() == nil {
			polled = append(polled, s.cl.PollRecords(ctx, 6-len(polled)).Records()...)
		}
		if len(polled) != 6 {
			t.Fatalf("polled %d records, want 6", len(polled))
		}
		b := new(batch)
		for _, rec := range polled[:3] {
			s.add(ctx, b, rec)
		}
		if err := s.insertAndCommit(ctx, b); err != nil {
			t.Fatal(err)
		}
		if got := committedOffset(t, c.Admin(t), group, c.Topics.Events()); got != 3 {
			t.Errorf("committed offset %d after inserting records 0-2 of the 6 polled; want 3", got)
		}
		var rows uint64
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+db+".sluice_events FINAL").Scan(&rows); err != nil || rows != 3 {
			t.Errorf("rows: %d, %v; want 3", rows, err)
		}
	})
}

// hangingProxy forwards TCP to a server until hang is called; from then
// on nothing more reaches the client, as from a ClickHouse that stopped
// answering.
type hangingProxy struct {
	ln     net.Listener
	hung   atomic.Bool
	closed chan struct{}
	wg     sync.WaitGroup
}

func newHangingProxy(t *testing.T, target string) *hangingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangingProxy{ln: ln, closed: make(chan struct{})}
	var conns sync.Map
	p.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			conns.Store(in, out)
			p.wg.Go(func() { p.pipe(out, in) })
			p.wg.Go(func() { p.pipe(in, out) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		close(p.closed)
		conns.Range(func(k, v any) bool { k.(net.Conn).Close(); v.(net.Conn).Close(); return true })
		p.wg.Wait()
	})
	return p
}

// pipe copies src to dst until either closes; once hung it holds what it
// read.
func (p *hangingProxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.hung.Load() {
			<-p.closed
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *hangingProxy) addr() string { return p.ln.Addr().String() }

// Stop returns only once the sink's goroutine ended, even when ClickHouse
// hangs in the middle of the last insert: nothing is left using the
// client or the connection Stop closed.
func TestSinkStopWaitsForItsGoroutine(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		dsn, db := scratchDB(t)
		opts, err := clickhouse.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		proxy := newHangingProxy(t, opts.Addr[0])
		group := c.Group("analytics")
		s, err := NewSink(SinkConfig{
			DB: DBConfig{DSN: "clickhouse://" + proxy.addr() + "/default", Database: db}, Brokers: c.Brokers, Topic: c.Topics.Events(), Group: group,
			BatchSize: 4, FlushInterval: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		produceTo(t, c, enqueued(t, c.Topics.Events(), 0, 2))
		adm := c.Admin(t)
		deadline := time.Now().Add(30 * time.Second)
		for committedOffset(t, adm, group, c.Topics.Events()) != 2 {
			if time.Now().After(deadline) {
				t.Fatal("the first 2 records were not committed within 30s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		proxy.hung.Store(true)
		produceTo(t, c, enqueued(t, c.Topics.Events(), 2, 2))
		time.Sleep(500 * time.Millisecond) // the batch is fetched; its insert hangs

		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = s.Stop(ctx)
		took := time.Since(start)
		select {
		case <-s.done:
		default:
			t.Fatal("Stop returned while the sink's goroutine still runs")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Stop: %v; want the deadline exceeded", err)
		}
		// A connection hung in its handshake ends with the dial timeout
		// (5s), whatever the context says.
		if took > 8*time.Second {
			t.Errorf("Stop took %s; want its 500ms deadline, at most the 5s dial timeout", took)
		}
		if got := committedOffset(t, adm, group, c.Topics.Events()); got != 2 {
			t.Errorf("committed offset %d; want 2 (the hung batch is not in ClickHouse)", got)
		}
	})
}
