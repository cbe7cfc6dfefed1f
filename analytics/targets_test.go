package analytics

import (
	"context"
	"testing"
	"time"
)

// Targets are looked up by (tenant, job): two tenants' jobs of the same
// id keep their own queues, one job alone and many at once.
func TestLookupTargetsByTenantAndJob(t *testing.T) {
	dsn, db := scratchDB(t)
	s, err := NewSink(SinkConfig{DB: DBConfig{DSN: dsn, Database: db}, Brokers: []string{"127.0.0.1:1"}, Topic: "events", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Migrate(ctx, s.conn, db, time.Now()); err != nil {
		t.Fatal(err)
	}
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+db+".sluice_events (topic, partition, offset, tenant_id, event_id, type, job_id, queue, target_url, occurred_at, occurred_at_us, inserted_at)")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i, r := range [][4]string{
		{"t1", "j1", "job.enqueued", "emails"}, {"t2", "j1", "job.enqueued", "sms"},
		{"t1", "j2", "job.ready", "push"}, {"t1", "j3", "job.attempted", ""},
	} {
		if err := b.Append("events", int32(0), int64(i), r[0], "ev"+r[1]+r[0], r[2], r[1], r[3], "http://a.example/"+r[3], now, now.UnixMicro(), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if err := s.lookupTargets(ctx, []jobKey{{"t2", "j1"}}); err != nil {
		t.Fatalf("look up one job: %v", err)
	}
	if got, ok := s.jobs.get(jobKey{"t2", "j1"}); !ok || got.queue != "sms" {
		t.Errorf("t2/j1: %+v, %v; want queue sms", got, ok)
	}
	if _, ok := s.jobs.get(jobKey{"t1", "j1"}); ok {
		t.Error("t1/j1 was cached by a lookup of t2/j1 only")
	}
	if err := s.lookupTargets(ctx, []jobKey{{"t1", "j1"}, {"t1", "j2"}, {"t1", "j3"}, {"t3", "j1"}}); err != nil {
		t.Fatalf("look up four jobs: %v", err)
	}
	for k, want := range map[jobKey]string{{"t1", "j1"}: "emails", {"t1", "j2"}: "push"} {
		if got, ok := s.jobs.get(k); !ok || got.queue != want {
			t.Errorf("%v: %+v, %v; want queue %s", k, got, ok, want)
		}
	}
	for _, k := range []jobKey{{"t1", "j3"}, {"t3", "j1"}} {
		if got, ok := s.jobs.get(k); ok {
			t.Errorf("%v: %+v; want no target (no enqueue or ready row of it)", k, got)
		}
	}
}
