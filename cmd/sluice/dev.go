package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/delivery"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/tenancy"
)

// runDev runs every role in one process on an embedded Kafka-protocol
// broker (kfake, persisted to --data-dir) and an embedded Redis-protocol
// store (in memory; projections are rebuilt from the log at start).
func runDev(ctx context.Context, args []string) error {
	fs := newFlagSet("dev")
	dataDir := fs.String("data-dir", ".sluice", "where the embedded broker keeps the log")
	httpAddr := fs.String("http-addr", "127.0.0.1:8080", "address of the HTTP API")
	apiKey := fs.String("api-key", "", "API key of the dev tenant; generated and kept in --data-dir when empty")
	tuning := addTuningFlags(fs)
	inboundFlags := addInboundFlags(fs)
	chFlags := addClickHouseFlags(fs)
	logs := addLogFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	chCfg, err := chFlags.config()
	if err != nil {
		return err
	}
	logger, err := logs.logger()
	if err != nil {
		return err
	}
	inboundCfg, err := inboundFlags.config()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}

	broker, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DataDir(filepath.Join(*dataDir, "kafka")),
		kfake.WithLogger(kfakeLogger{logger}),
	)
	if err != nil {
		return fmt.Errorf("start embedded kafka: %w", err)
	}
	defer broker.Close()

	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("start embedded redis: %w", err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), PoolSize: 64})
	defer rdb.Close()

	topics := eventlog.Topics{Partitions: 4, ReplicationFactor: 1}.WithDefaults()
	brokers := broker.ListenAddrs()
	if err := createTopics(ctx, brokers, topics); err != nil {
		return err
	}
	key, err := devKey(*dataDir, *apiKey)
	if err != nil {
		return err
	}
	dir, err := tenancy.NewDirectory(tenancy.Config{Brokers: brokers, Topic: topics.Config(), Logger: logger})
	if err != nil {
		return err
	}
	if err := dir.Start(ctx); err != nil {
		return err
	}
	p, secret, err := bootstrapTenant(ctx, dir, "dev", key)
	_ = dir.Stop(ctx)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	n, err := startNode(ctx, nodeConfig{
		Brokers:             brokers,
		Redis:               rdb,
		Topics:              topics,
		Roles:               map[string]bool{roleAPI: true, roleDelivery: true, roleProjections: true, roleTiers: true, roleRouter: true, roleAnalytics: chCfg.DSN != ""},
		Listener:            ln,
		NodeID:              "dev",
		ClickHouse:          chCfg,
		Guard:               delivery.Guard{AllowLoopback: true},
		Limits:              tuning.limits(),
		DeliveryConcurrency: *tuning.concurrency,
		IdempotencyWindow:   *tuning.idempotency,
		Protection:          tuning.protection(),
		DrainRate:           *tuning.drainRate,
		Inbound:             inboundCfg,
		Logger:              logger,
	})
	if err != nil {
		ln.Close()
		return err
	}
	logger.Info("dev tenant ready", "tenant_id", p.TenantID, "key_id", p.KeyID)
	if *apiKey == "" {
		fmt.Printf("api key: %s\n", key)
	}
	fmt.Printf("signing secret: %s\n", secret)
	fmt.Printf("embedded kafka: %s\n", strings.Join(brokers, ","))
	fmt.Printf("sluice ready http://%s\n", ln.Addr())

	werr := n.wait(ctx)
	logger.Info("shutting down")
	return errors.Join(werr, n.stop(context.Background()))
}

// devKey returns the dev tenant's key: the flag, else the one kept in
// dataDir, else a new one that is then kept.
func devKey(dataDir, flagKey string) (string, error) {
	if flagKey != "" {
		return flagKey, nil
	}
	path := filepath.Join(dataDir, "api-key")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read dev api key: %w", err)
	}
	key := tenancy.NewKey()
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep dev api key: %w", err)
	}
	return key, nil
}

func createTopics(ctx context.Context, brokers []string, topics eventlog.Topics, opts ...kgo.Opt) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := eventlog.CreateTopics(ctx, kadm.NewClient(cl), topics); err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	return nil
}

// kfakeLogger routes the embedded broker's logs to slog at debug level.
type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	if level <= kfake.LogLevelWarn {
		k.l.Warn("embedded kafka: " + fmt.Sprintf(msg, args...))
		return
	}
	k.l.Debug("embedded kafka: " + fmt.Sprintf(msg, args...))
}

// bootstrapTenant makes key resolve to a tenant and returns it with the
// tenant's signing secret.
func bootstrapTenant(ctx context.Context, dir *tenancy.Directory, name, key string) (tenancy.Principal, string, error) {
	p, err := dir.Bootstrap(ctx, name, key, time.Now())
	if err != nil {
		return p, "", fmt.Errorf("create %s tenant: %w", name, err)
	}
	t, err := dir.Tenant(p.TenantID)
	if err != nil {
		return p, "", err
	}
	return p, t.SigningSecret, nil
}
