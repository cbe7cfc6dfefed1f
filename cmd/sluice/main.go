// Command sluice is the Sluice server and its command-line client.
//
//	sluice dev                      every role in one process, embedded Kafka and Redis
//	sluice serve --roles=...        chosen roles against external Kafka and Redis
//	sluice topics create            create the topics (idempotent)
//	sluice projections rebuild      rebuild Redis state from the log
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: sluice <command> [flags]

commands:
  dev                   run every role in one process on embedded defaults
  serve                 run the chosen roles against external Kafka and Redis
  topics create         create Sluice's topics (idempotent)
  projections rebuild   rebuild the Redis projections from the log
  inbox replay          route a source's inbound requests of a time range again
  jobs ...              enqueue, get, list, cancel and retry jobs on a server
  dlq ...               list, retry and purge dead letters on a server
  queues ...            list, get, pause, resume and update queues on a server
  audit JOB_ID          print a job's timeline: every event, attempt, status and latency
  replay --from TIME    send a time range of jobs round again as new jobs

Run 'sluice <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sluice:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; {
	case cmd == "dev":
		return runDev(ctx, rest)
	case cmd == "serve":
		return runServe(ctx, rest)
	case cmd == "topics" && len(rest) > 0 && rest[0] == "create":
		return runTopicsCreate(ctx, rest[1:])
	case cmd == "projections" && len(rest) > 0 && rest[0] == "rebuild":
		return runProjectionsRebuild(ctx, rest[1:])
	case cmd == "jobs":
		return runJobs(ctx, rest)
	case cmd == "dlq":
		return runDLQ(ctx, rest)
	case cmd == "queues":
		return runQueues(ctx, rest)
	case cmd == "inbox":
		return runInbox(ctx, rest)
	case cmd == "audit":
		return runAudit(ctx, rest)
	case cmd == "replay":
		return runReplay(ctx, rest)
	case cmd == "-h" || cmd == "--help" || cmd == "help":
		fmt.Fprint(os.Stdout, usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
