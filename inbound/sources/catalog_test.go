package sources

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/log/eventlogtest"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func newCatalog(t *testing.T, c *eventlogtest.Cluster) *Catalog {
	t.Helper()
	cat, err := New(Config{Brokers: c.Brokers, Topic: c.Topics.Config()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cat.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cat.Stop(context.Background()) })
	return cat
}

func githubSource(id, secret string) *sluicev1.Source {
	return &sluicev1.Source{
		Id: id, Name: "gh",
		Verification: &sluicev1.Verification{Kind: &sluicev1.Verification_Github{Github: &sluicev1.GitHubVerification{Secret: secret}}},
		Routes:       []*sluicev1.Route{{Queue: "pushes"}},
	}
}

func TestCatalogFoldsPutsAndDeletes(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		writer, reader := newCatalog(t, c), newCatalog(t, c)
		actor := &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: "key_1"}
		a, b := NewID(), NewID()
		if err := writer.Put(ctx, "ten_a", githubSource(a, "first secret"), actor, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := writer.Put(ctx, "ten_b", githubSource(b, "other secret"), actor, time.Now()); err != nil {
			t.Fatal(err)
		}
		// The writer sees its own change at once.
		if got, err := writer.Get("ten_a", a); err != nil || got.Name != "gh" {
			t.Fatalf("Get after Put: got %v, %v; want the source", got, err)
		}
		// Another tenant gets not found, never the source.
		if _, err := writer.Get("ten_b", a); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of another tenant's source: got %v, want ErrNotFound", err)
		}
		// Another catalog folds it too.
		if err := reader.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		e, ok := reader.Entry(a)
		if !ok || e.TenantID != "ten_a" || e.Verifier == nil {
			t.Fatalf("reader Entry: got %+v, %v; want ten_a's source with a verifier", e, ok)
		}
		if got := reader.List("ten_a"); len(got) != 1 || got[0].Id != a {
			t.Fatalf("List(ten_a): got %v, want [%s]", got, a)
		}
		// An update replaces it; a delete removes it.
		changed := githubSource(a, "second secret")
		changed.Name = "renamed"
		if err := writer.Put(ctx, "ten_a", changed, actor, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got, _ := writer.Get("ten_a", a); got.GetName() != "renamed" {
			t.Fatalf("after update: got name %q, want renamed", got.GetName())
		}
		if err := writer.Delete(ctx, "ten_a", a); err != nil {
			t.Fatal(err)
		}
		if _, err := writer.Get("ten_a", a); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after Delete: got %v, want ErrNotFound", err)
		}
		// A fresh catalog folds the history to the same state.
		fresh := newCatalog(t, c)
		if _, ok := fresh.Entry(a); ok {
			t.Fatal("fresh catalog: deleted source present")
		}
		if _, ok := fresh.Entry(b); !ok {
			t.Fatal("fresh catalog: ten_b's source missing")
		}
	})
}
