package worker

import (
	"context"
	"log/slog"
	"sync"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/client"
)

// completer sends completions, batching the ones that arrive while a
// call is under way into the next CompleteBatch call.
type completer struct {
	c     *client.Client
	max   int
	log   *slog.Logger
	in    chan client.Completion
	done  chan struct{}
	once  sync.Once
	batch bool
}

func newCompleter(c *client.Client, max int, log *slog.Logger) *completer {
	d := &completer{c: c, max: max, log: log, in: make(chan client.Completion, max), done: make(chan struct{}), batch: max > 1}
	go d.run()
	return d
}

// add queues a completion; it blocks while max completions wait.
func (d *completer) add(c client.Completion) { d.in <- c }

// close sends what is queued and waits until it is sent.
func (d *completer) close() {
	d.once.Do(func() { close(d.in) })
	<-d.done
}

func (d *completer) run() {
	defer close(d.done)
	for first := range d.in {
		items := []client.Completion{first}
	gather:
		for len(items) < d.max {
			select {
			case c, ok := <-d.in:
				if !ok {
					break gather
				}
				items = append(items, c)
			default:
				break gather
			}
		}
		d.send(items)
	}
}

// send completes items, with CompleteBatch when there are several and the
// server has it.
func (d *completer) send(items []client.Completion) {
	if d.batch && len(items) > 1 {
		var errs []error
		err := retryCall(func(ctx context.Context) error {
			var err error
			errs, err = d.c.CompleteBatch(ctx, items)
			return err
		})
		switch {
		case err == nil:
			for i, e := range errs {
				d.report(items[i], e)
			}
			return
		case client.CodeOf(err) == connect.CodeUnimplemented:
			d.log.Warn("server has no CompleteBatch; completing one by one")
			d.batch = false
		default:
			for _, it := range items {
				d.report(it, err)
			}
			return
		}
	}
	for _, it := range items {
		err := retryCall(func(ctx context.Context) error {
			_, err := d.c.Complete(ctx, it.JobID, it.LeaseToken, it.Result)
			return err
		})
		d.report(it, err)
	}
}

func (d *completer) report(it client.Completion, err error) {
	switch {
	case err == nil:
		d.log.Debug("job completed", "job_id", it.JobID)
	case client.IsStaleLease(err):
		d.log.Warn("completion refused: the lease ended first", "job_id", it.JobID, "error", err)
	default:
		d.log.Error("report completion", "job_id", it.JobID, "error", err)
	}
}
