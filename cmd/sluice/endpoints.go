package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/delivery"
	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	"github.com/sluicehq/sluice/tenancy"
)

// endpointSource gives delivery the endpoints folded by the tenant
// directory.
type endpointSource struct{ dir *tenancy.Directory }

func (e endpointSource) Endpoint(tenantID, endpointID string) (*eventv1.EndpointConfig, bool) {
	cfg, err := e.dir.Endpoint(tenantID, endpointID)
	return cfg, err == nil
}

func (e endpointSource) EndpointHealthRecord(h *eventv1.EndpointHealth, actor *eventv1.Actor, now time.Time) (*kgo.Record, error) {
	return e.dir.EndpointHealthRecord(h, actor, now)
}

func (e endpointSource) EndpointEnableOffset() (int64, <-chan struct{}) {
	return e.dir.EndpointEnableOffset()
}

// startReleaser runs the delivery role's consumer of sluice.parked: it
// releases the deliveries parked for disabled endpoints once they are
// enabled again. It returns the function that stops it.
func startReleaser(ctx context.Context, cfg nodeConfig, m *metrics, dir *tenancy.Directory) (func(context.Context) error, error) {
	rel, err := delivery.NewReleaser(delivery.ReleaserConfig{
		Topics: cfg.Topics, Endpoints: endpointSource{dir}, DrainRate: cfg.DrainRate, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	runner, err := eventlog.NewRunner(eventlog.RunnerConfig{
		Brokers:         cfg.Brokers,
		Group:           cfg.Topics.Prefix + "parked",
		Topics:          []string{cfg.Topics.Parked()},
		Handler:         rel.Handle,
		TransactionalID: cfg.Topics.Prefix + "parked-" + cfg.NodeID,
		MaxInFlight:     1, // in order: a partition waits on its head
		ClientOpts:      staticMember(cfg, m, "parked"),
		Logger:          cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	if err := runner.Start(ctx); err != nil {
		return nil, fmt.Errorf("start parked releaser: %w", err)
	}
	return runner.Stop, nil
}
