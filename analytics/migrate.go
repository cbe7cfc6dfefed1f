package analytics

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one versioned schema change.
type migration struct {
	version    uint32
	name       string
	statements []string
}

// migrations returns the embedded migrations in version order, with
// {db} replaced by the database name.
func migrations(db string) ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with its version, NNNN_", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		m := migration{version: uint32(v), name: e.Name()}
		for _, stmt := range strings.Split(strings.ReplaceAll(string(b), "{db}", db), ";") {
			if stmt = strings.TrimSpace(stmt); stmt != "" {
				m.statements = append(m.statements, stmt)
			}
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b migration) int { return int(a.version) - int(b.version) })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", ms[i-1].name, ms[i].name, ms[i].version)
		}
	}
	return ms, nil
}

// Migrate creates the database and applies every embedded migration not
// yet recorded in {db}.sluice_schema_migrations, in version order. It is
// idempotent, and safe to run from several nodes at once: every statement
// is idempotent in itself. It returns the versions it applied.
func Migrate(ctx context.Context, conn driver.Conn, db string, now time.Time) ([]uint32, error) {
	if !databaseName.MatchString(db) {
		return nil, fmt.Errorf("analytics: Database: %q is not a plain identifier", db)
	}
	ms, err := migrations(db)
	if err != nil {
		return nil, err
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		return nil, fmt.Errorf("create database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+db+`.sluice_schema_migrations (
    version UInt32,
    applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version`); err != nil {
		return nil, fmt.Errorf("create %s.sluice_schema_migrations: %w", db, err)
	}
	done, err := appliedVersions(ctx, conn, db)
	if err != nil {
		return nil, err
	}
	var applied []uint32
	for _, m := range ms {
		if done[m.version] {
			continue
		}
		for i, stmt := range m.statements {
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("apply migration %s, statement %d: %w", m.name, i+1, err)
			}
		}
		if err := record(ctx, conn, db, m.version, now); err != nil {
			return applied, fmt.Errorf("record migration %s: %w", m.name, err)
		}
		applied = append(applied, m.version)
	}
	return applied, nil
}

func appliedVersions(ctx context.Context, conn driver.Conn, db string) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+db+".sluice_schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read %s.sluice_schema_migrations: %w", db, err)
	}
	defer rows.Close()
	done := make(map[uint32]bool)
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read %s.sluice_schema_migrations: %w", db, err)
		}
		done[v] = true
	}
	return done, rows.Err()
}

// record notes a migration as applied. It sends the row as a data block,
// not inline VALUES, which ClickHouse 18.x does not take over the native
// protocol.
func record(ctx context.Context, conn driver.Conn, db string, version uint32, now time.Time) error {
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".sluice_schema_migrations (version, applied_at)")
	if err != nil {
		return err
	}
	if err := batch.Append(version, now.UTC()); err != nil {
		_ = batch.Abort()
		return err
	}
	return batch.Send()
}
