package api_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/tenancy"
)

var topics = eventlog.Topics{}.WithDefaults()

// keys maps the test API keys to their principals.
type keys map[string]tenancy.Principal

func (k keys) Authenticate(key string) (tenancy.Principal, error) {
	p, ok := k[key]
	if !ok {
		return p, errors.New("unknown key")
	}
	return p, nil
}

var testKeys = keys{
	"sk_acme":   {TenantID: "acme", KeyID: "key_acme"},
	"sk_globex": {TenantID: "globex", KeyID: "key_globex"},
}

// foldingLog is an Appender that folds what it appends into a read
// model at once, as if the projections role were infinitely fast. It
// records every AppendAtomic call, and fails the calls failAt says.
type foldingLog struct {
	store *projections.Store

	mu     sync.Mutex
	offset int64
	atomic [][]*kgo.Record
	failAt func(call int) bool
}

func (l *foldingLog) Append(ctx context.Context, recs ...*kgo.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fold(ctx, recs)
}

func (l *foldingLog) AppendAtomic(ctx context.Context, recs []*kgo.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failAt != nil && l.failAt(len(l.atomic)) {
		return errors.New("broker gone")
	}
	l.atomic = append(l.atomic, recs)
	return l.fold(ctx, recs)
}

func (l *foldingLog) AppendEach(ctx context.Context, recs []*kgo.Record) []error {
	err := l.Append(ctx, recs...)
	errs := make([]error, len(recs))
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func (l *foldingLog) fold(ctx context.Context, recs []*kgo.Record) error {
	var events []*kgo.Record
	for _, r := range recs {
		if r.Topic != topics.Events() {
			continue
		}
		r.Partition, r.Offset = 0, l.offset
		l.offset++
		events = append(events, r)
	}
	return l.store.Apply(ctx, events)
}

// calls returns the AppendAtomic calls so far.
func (l *foldingLog) calls() [][]*kgo.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]*kgo.Record(nil), l.atomic...)
}

// fixture is an API server over a folding log and a miniredis read model.
type fixture struct {
	log    *foldingLog
	store  *projections.Store
	url    string
	queues *memQueues
	clock  *clock
	cfg    api.Config
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	store := projections.NewStore(rdb, projections.StoreConfig{Logger: logger})
	f := &fixture{log: &foldingLog{store: store}, store: store, queues: &memQueues{}, clock: &clock{}}
	f.cfg = api.Config{
		Auth: testKeys, Log: f.log, Jobs: store, DeadLetters: store, Topics: topics,
		Limits: api.Limits{MaxPayloadBytes: 64}, Logger: logger,
		Queues: f.queues, QueueStats: store, Workers: store, Now: f.clock.now, ClaimPoll: 5 * time.Millisecond,
	}
	h, err := api.NewHandler(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// bearer adds an API key to every call.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (f *fixture) deadLetters(key string) sluicev1connect.DeadLetterServiceClient {
	return sluicev1connect.NewDeadLetterServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearer(key)))
}

func (f *fixture) jobs(key string) sluicev1connect.JobServiceClient {
	return sluicev1connect.NewJobServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearer(key)))
}

// t0 is when test histories begin.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// seedDead appends n jobs of the tenant that died on their first attempt
// with lastErr, the i-th at t0 + i seconds, and returns their ids.
func (f *fixture) seedDead(t *testing.T, tenantID, queue, url, lastErr string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	recs := make([]*kgo.Record, 0, 2*n)
	for i := range ids {
		ids[i] = eventlog.NewID()
		at := t0.Add(time.Duration(i) * time.Second)
		meta := eventlog.Meta{TenantID: tenantID, JobID: ids[i], OccurredAt: at}
		spec := &eventv1.JobSpec{
			Queue: queue, Payload: []byte(`{"n":1}`), MaxAttempts: 1, CreatedAt: timestamppb.New(at),
			Target: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: url}},
		}
		recs = append(recs, encode(t, eventlog.NewEvent(meta, &eventv1.JobEnqueued{Spec: spec})),
			encode(t, eventlog.NewEvent(meta, &eventv1.JobAttempted{
				Attempt: 1, StartedAt: timestamppb.New(at), StatusCode: 500, Error: lastErr,
				Outcome: eventv1.Outcome_OUTCOME_DEAD, Reason: "attempts exhausted: 1 of 1 failed",
			})))
	}
	for chunk := range slices.Chunk(recs, 2000) {
		if err := f.log.Append(context.Background(), chunk...); err != nil {
			t.Fatalf("seed dead jobs: %v", err)
		}
	}
	return ids
}

// append appends events of one job.
func (f *fixture) append(t *testing.T, evs ...*eventv1.Event) {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i, ev := range evs {
		recs[i] = encode(t, ev)
	}
	if err := f.log.Append(context.Background(), recs...); err != nil {
		t.Fatalf("append: %v", err)
	}
}

func encode(t *testing.T, ev *eventv1.Event) *kgo.Record {
	t.Helper()
	rec, err := eventlog.EncodeEvent(topics.Events(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// wantError checks that err is a Connect error of code whose message
// starts with field.
func wantError(t *testing.T, err error, code connect.Code, field string) {
	t.Helper()
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != code || !strings.HasPrefix(cerr.Message(), field) {
		t.Errorf("got error %v; want %v naming %q", err, code, field)
	}
}

// state returns a job's state in the read model, or "not found".
func (f *fixture) state(t *testing.T, tenantID, id string) string {
	t.Helper()
	j, err := f.store.GetJob(context.Background(), tenantID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return "not found"
	}
	if err != nil {
		t.Fatalf("GetJob: %v", err)
	}
	return fmt.Sprint(j.State)
}

// clock is real time moved forward by the tests.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// memQueues keeps queue settings in memory, as tenancy.Directory keeps
// them folded from the config topic.
type memQueues struct {
	mu sync.Mutex
	m  map[string]*sluicev1.Queue
}

func (q *memQueues) Queue(tenantID, name string) *sluicev1.Queue {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s, ok := q.m[tenantID+"/"+name]; ok {
		return proto.CloneOf(s)
	}
	return &sluicev1.Queue{Name: name}
}

func (q *memQueues) ConfiguredQueues(tenantID string) []*sluicev1.Queue {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*sluicev1.Queue
	for k, s := range q.m {
		if strings.HasPrefix(k, tenantID+"/") {
			out = append(out, proto.CloneOf(s))
		}
	}
	return out
}

func (q *memQueues) UpdateQueue(_ context.Context, tenantID, name string, _ *eventv1.Actor, now time.Time, change func(*sluicev1.Queue)) (*sluicev1.Queue, error) {
	s := q.Queue(tenantID, name)
	change(s)
	s.Name, s.UpdatedAt = name, timestamppb.New(now)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.m == nil {
		q.m = make(map[string]*sluicev1.Queue)
	}
	q.m[tenantID+"/"+name] = proto.CloneOf(s)
	return s, nil
}

func (f *fixture) workers(key string) sluicev1connect.WorkerServiceClient {
	return sluicev1connect.NewWorkerServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearer(key)))
}

func (f *fixture) queueService(key string) sluicev1connect.QueueServiceClient {
	return sluicev1connect.NewQueueServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearer(key)))
}
