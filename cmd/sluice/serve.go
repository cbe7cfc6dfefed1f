package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/delivery"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	"github.com/sluicehq/sluice/tenancy"
)

// kafkaFlags are the flags naming the cluster and topics.
type kafkaFlags struct {
	brokers     *string
	topicPrefix *string
	partitions  *int
	replication *int
}

func addKafkaFlags(fs flagSet) kafkaFlags {
	return kafkaFlags{
		brokers:     fs.String("kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers"),
		topicPrefix: fs.String("topic-prefix", eventlog.DefaultPrefix, "prefix of every topic name"),
		partitions:  fs.Int("partitions", 12, "partitions of the keyed topics (only used when creating them)"),
		replication: fs.Int("replication-factor", -1, "replication factor of new topics; -1 = broker default"),
	}
}

func (k kafkaFlags) brokerList() []string { return strings.Split(*k.brokers, ",") }

func (k kafkaFlags) topics() eventlog.Topics {
	return eventlog.Topics{
		Prefix:            *k.topicPrefix,
		Partitions:        int32(*k.partitions),
		ReplicationFactor: int16(*k.replication),
	}.WithDefaults()
}

// runServe runs the chosen roles against external Kafka and Redis.
func runServe(ctx context.Context, args []string) error {
	fs := newFlagSet("serve")
	roles := fs.String("roles", "api,delivery,projections,tiers,router", "roles to run: "+strings.Join(knownRoles, ","))
	kafka := addKafkaFlags(fs)
	redisURL := fs.String("redis-url", "redis://127.0.0.1:6379/0", "Redis holding the projections")
	httpAddr := fs.String("http-addr", "0.0.0.0:8080", "address of the HTTP API (api role)")
	nodeID := fs.String("node-id", "", "stable id of this node, used in transactional ids; default: the hostname")
	createTopicsFlag := fs.Bool("create-topics", false, "create missing topics at start")
	allowLoopback := fs.Bool("allow-loopback-targets", false, "let deliveries reach loopback addresses")
	allowPrivate := fs.Bool("allow-private-targets", false, "let deliveries reach private and link-local addresses")
	tuning := addTuningFlags(fs)
	inboundFlags := addInboundFlags(fs)
	debugAddr := fs.String("debug-addr", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); off when empty")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics, /healthz and /readyz on this address too, for nodes without the api role (e.g. 0.0.0.0:9090); off when empty")
	redisPrefix := fs.String("redis-prefix", projections.DefaultPrefix, "prefix of every Redis key of the read model")
	bootstrapKey := fs.String("bootstrap-api-key", "", "make sure this API key exists, creating a tenant for it when it does not")
	chFlags := addClickHouseFlags(fs)
	logs := addLogFlags(fs)
	if err := fs.parse(args); err != nil {
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
	roleSet, err := parseRoles(*roles)
	if err != nil {
		return err
	}
	chCfg, err := chFlags.config()
	if err != nil {
		return err
	}
	if roleSet[roleAnalytics] && chCfg.DSN == "" {
		return fmt.Errorf("--roles=%s needs --clickhouse-dsn", roleAnalytics)
	}
	if *nodeID == "" {
		if *nodeID, err = os.Hostname(); err != nil {
			return fmt.Errorf("--node-id: %w", err)
		}
	}
	opt, err := redis.ParseURL(*redisURL)
	if err != nil {
		return fmt.Errorf("--redis-url: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	topics := kafka.topics()
	if *createTopicsFlag {
		if err := createTopics(ctx, kafka.brokerList(), topics); err != nil {
			return err
		}
	}
	if *debugAddr != "" {
		stop, err := serveDebug(*debugAddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *bootstrapKey != "" {
		dir, err := tenancy.NewDirectory(tenancy.Config{Brokers: kafka.brokerList(), Topic: topics.Config(), Logger: logger})
		if err != nil {
			return err
		}
		err = dir.Start(ctx)
		if err == nil {
			var p tenancy.Principal
			var secret string
			p, secret, err = bootstrapTenant(ctx, dir, "default", *bootstrapKey)
			if err == nil {
				logger.Info("bootstrap tenant ready", "tenant_id", p.TenantID, "key_id", p.KeyID)
				fmt.Printf("tenant: %s\nsigning secret: %s\n", p.TenantID, secret)
			}
		}
		_ = dir.Stop(ctx)
		if err != nil {
			return err
		}
	}
	var ln net.Listener
	if roleSet[roleAPI] {
		if ln, err = net.Listen("tcp", *httpAddr); err != nil {
			return fmt.Errorf("--http-addr: %w", err)
		}
	}
	var metricsLn net.Listener
	if *metricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", *metricsAddr); err != nil {
			if ln != nil {
				ln.Close()
			}
			return fmt.Errorf("--metrics-addr: %w", err)
		}
	}
	n, err := startNode(ctx, nodeConfig{
		Brokers:             kafka.brokerList(),
		Redis:               rdb,
		RedisPrefix:         *redisPrefix,
		MetricsListener:     metricsLn,
		Topics:              topics,
		Roles:               roleSet,
		Listener:            ln,
		NodeID:              *nodeID,
		Guard:               delivery.Guard{AllowLoopback: *allowLoopback, AllowPrivate: *allowPrivate},
		Limits:              tuning.limits(),
		DeliveryConcurrency: *tuning.concurrency,
		IdempotencyWindow:   *tuning.idempotency,
		Protection:          tuning.protection(),
		DrainRate:           *tuning.drainRate,
		Inbound:             inboundCfg,
		ClickHouse:          chCfg,
		Logger:              logger,
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		if metricsLn != nil {
			metricsLn.Close()
		}
		return err
	}
	logger.Info("serving", "roles", rolesString(roleSet), "node_id", *nodeID)
	if metricsLn != nil {
		fmt.Printf("metrics http://%s\n", metricsLn.Addr())
	}
	if ln != nil {
		fmt.Printf("sluice ready http://%s\n", ln.Addr())
	} else {
		fmt.Printf("sluice ready roles=%s\n", rolesString(roleSet))
	}
	werr := n.wait(ctx)
	logger.Info("shutting down")
	return errors.Join(werr, n.stop(context.Background()))
}

// runTopicsCreate creates the topics with their configs.
func runTopicsCreate(ctx context.Context, args []string) error {
	fs := newFlagSet("topics create")
	kafka := addKafkaFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := createTopics(ctx, kafka.brokerList(), kafka.topics()); err != nil {
		return err
	}
	fmt.Println("topics ready")
	return nil
}
