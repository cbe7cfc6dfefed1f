package analytics

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultDatabase holds Sluice's tables unless configured otherwise.
const DefaultDatabase = "sluice"

var databaseName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// DBConfig names the ClickHouse server and database.
type DBConfig struct {
	// DSN of the server, e.g. "clickhouse://user:pass@host:9000". The
	// database in the DSN is only the connection's default; tables live
	// in Database. Required.
	DSN string
	// Database holding the tables; created by Migrate. Default
	// DefaultDatabase ("sluice").
	Database string
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c DBConfig) WithDefaults() DBConfig {
	if c.Database == "" {
		c.Database = DefaultDatabase
	}
	return c
}

// Validate reports every problem with c.
func (c DBConfig) Validate() error {
	var errs []error
	if c.DSN == "" {
		errs = append(errs, errors.New("analytics: DSN: required"))
	} else if _, err := clickhouse.ParseDSN(c.DSN); err != nil {
		errs = append(errs, fmt.Errorf("analytics: DSN: %w", err))
	}
	if c.Database != "" && !databaseName.MatchString(c.Database) {
		errs = append(errs, fmt.Errorf("analytics: Database: %q is not a plain identifier", c.Database))
	}
	return errors.Join(errs...)
}

// DefaultReadTimeout is how long Open's connections wait for the server
// to send anything before a query fails, unless the DSN sets
// read_timeout.
const DefaultReadTimeout = 30 * time.Second

// Open connects to ClickHouse. The connection is made lazily: Open does
// not fail when the server is down, its first use does. Connecting gives
// up after 5s, a query whose server is silent for DefaultReadTimeout.
func Open(c DBConfig) (driver.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts, err := clickhouse.ParseDSN(c.DSN)
	if err != nil {
		return nil, fmt.Errorf("analytics: DSN: %w", err)
	}
	if opts.DialTimeout == 0 || opts.DialTimeout > 5*time.Second {
		opts.DialTimeout = 5 * time.Second
	}
	// A server that stops answering fails a query after ReadTimeout
	// (the driver's default is 5 minutes); the DSN's read_timeout wins.
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", err)
	}
	return conn, nil
}

// SinkConfig configures the Sink.
type SinkConfig struct {
	DB DBConfig
	// Conn overrides DB: an open connection the Sink uses and does not
	// close. Default: Open(DB), closed by Stop.
	Conn driver.Conn
	// Brokers of the Kafka cluster. Required.
	Brokers []string
	// Topic to copy: the events topic. Required.
	Topic string
	// Group is the sink's consumer group. Required.
	Group string
	// BatchSize is the most records in one insert. Default 5,000.
	BatchSize int
	// FlushInterval is the longest a record waits in a batch before the
	// batch is inserted. Default 1s.
	FlushInterval time.Duration
	// MaxBackoff caps the wait between retries of a failed insert or
	// migration. Default 5s.
	MaxBackoff time.Duration
	// JobCacheSize is how many jobs' queue and target the sink remembers
	// to fill in rows of events that do not carry them. Default 100,000.
	JobCacheSize int
	// ClientOpts are extra options for the Kafka client.
	ClientOpts []kgo.Opt
	// Observer is told of every flush; default none.
	Observer Observer
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Observer watches the sink's flushes; cmd wires metrics to it.
type Observer interface {
	// Flushed is called after a batch of records went into ClickHouse.
	Flushed(records int, took time.Duration)
	// FlushFailed is called for every failed try to write to ClickHouse:
	// a batch, or the migrations at start.
	FlushFailed(err error)
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c SinkConfig) WithDefaults() SinkConfig {
	c.DB = c.DB.WithDefaults()
	if c.BatchSize == 0 {
		c.BatchSize = 5000
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.JobCacheSize == 0 {
		c.JobCacheSize = 100_000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with c.
func (c SinkConfig) Validate() error {
	var errs []error
	if c.Conn == nil {
		if err := c.DB.Validate(); err != nil {
			errs = append(errs, err)
		}
	} else if c.DB.Database != "" && !databaseName.MatchString(c.DB.Database) {
		errs = append(errs, fmt.Errorf("analytics: Database: %q is not a plain identifier", c.DB.Database))
	}
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("analytics: Brokers: required"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("analytics: Topic: required"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("analytics: Group: required"))
	}
	if c.BatchSize < 0 {
		errs = append(errs, errors.New("analytics: BatchSize: must not be negative"))
	}
	if c.FlushInterval < 0 {
		errs = append(errs, errors.New("analytics: FlushInterval: must not be negative"))
	}
	return errors.Join(errs...)
}
