package analytics_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analytics"
)

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	ctx := context.Background()
	first, err := analytics.Migrate(ctx, db.conn, db.name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first, []uint32{1, 2}) {
		t.Errorf("first run applied %v, want [1 2]", first)
	}
	again, err := analytics.Migrate(ctx, db.conn, db.name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Errorf("second run applied %v, want nothing", again)
	}
	for _, table := range []string{"sluice_events", "sluice_attempts"} {
		if n := db.count(t, table); n != 0 {
			t.Errorf("%s: %d rows in a new table", table, n)
		}
	}
	if n := db.count(t, "sluice_schema_migrations"); n != 2 {
		t.Errorf("sluice_schema_migrations: %d rows, want 2", n)
	}
}

func TestMigrateRefusesBadDatabaseName(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	if _, err := analytics.Migrate(context.Background(), db.conn, "x; DROP TABLE y", time.Now()); err == nil {
		t.Error("Migrate accepted a database name that is not an identifier")
	}
}
