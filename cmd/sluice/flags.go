package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/delivery"
)

// flagSet is a flag.FlagSet whose flags also read SLUICE_* environment
// variables: --kafka-brokers falls back to SLUICE_KAFKA_BROKERS.
type flagSet struct {
	*flag.FlagSet
}

func newFlagSet(name string) flagSet {
	return flagSet{flag.NewFlagSet(name, flag.ContinueOnError)}
}

// parse parses args after applying the environment to unset flags.
func (fs flagSet) parse(args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "SLUICE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", env, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("bad environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

// logFlags are the logging flags every server command takes.
type logFlags struct {
	format *string
	level  *string
}

func addLogFlags(fs flagSet) logFlags {
	return logFlags{
		format: fs.String("log-format", "text", "log format: text or json"),
		level:  fs.String("log-level", "info", "log level: debug, info, warn or error"),
	}
}

func (l logFlags) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(*l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch *l.format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: %q is not text or json", *l.format)
	}
}

// tuningFlags size a node's work; dev and serve take the same ones.
type tuningFlags struct {
	maxPayload   *int
	concurrency  *int
	disableAfter *time.Duration
	drainRate    *float64
	idempotency  *time.Duration
}

func addTuningFlags(fs flagSet) tuningFlags {
	return tuningFlags{
		maxPayload:   fs.Int("max-payload-bytes", 1<<20, "largest job payload accepted"),
		concurrency:  fs.Int("delivery-concurrency", 256, "deliveries in flight per partition; one target may hold all but an eighth of them"),
		disableAfter: fs.Duration("endpoint-disable-after", 120*time.Hour, "disable an endpoint whose deliveries have all failed this long; negative never"),
		drainRate:    fs.Float64("endpoint-drain-rate", 50, "parked messages released per second per endpoint and node once the endpoint is enabled again"),
		idempotency:  fs.Duration("idempotency-window", api.DefaultIdempotencyWindow, "how long an idempotency key returns its first job; after it the key starts a new job"),
	}
}

// protection is the per-endpoint protection the flags ask for.
func (t tuningFlags) protection() delivery.ProtectionConfig {
	return delivery.ProtectionConfig{DisableAfter: *t.disableAfter}
}

func (t tuningFlags) limits() api.Limits { return api.Limits{MaxPayloadBytes: *t.maxPayload} }
