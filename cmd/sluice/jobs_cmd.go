package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluicehq/sluice/client"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const jobsUsage = `usage: sluice jobs <command> [flags]

commands:
  enqueue QUEUE [PAYLOAD]     enqueue one job (PAYLOAD is JSON; default null)
  enqueue --file FILE [QUEUE] enqueue every line of FILE (JSON EnqueueRequests; - is stdin) in batches
  get ID                      show a job
  list                        list jobs, newest first (--queue, --state, --limit)
  cancel ID...                cancel scheduled, ready or retrying jobs
  retry ID...                 send dead or cancelled jobs round again

Every command takes --server (SLUICE_SERVER), --api-key (SLUICE_API_KEY) and --json.
`

// runJobs dispatches `sluice jobs ...`.
func runJobs(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, jobsUsage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "enqueue":
		return runJobsEnqueue(ctx, rest)
	case "get":
		return runJobsGet(ctx, rest)
	case "list":
		return runJobsList(ctx, rest)
	case "cancel":
		return runJobsAmend(ctx, "cancel", rest)
	case "retry":
		return runJobsAmend(ctx, "retry", rest)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, jobsUsage)
		return nil
	default:
		fmt.Fprint(os.Stderr, jobsUsage)
		return fmt.Errorf("unknown jobs command %q", cmd)
	}
}

// headerFlags collects repeated --header K=V flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not NAME=VALUE", v)
	}
	h[k] = val
	return nil
}

func runJobsEnqueue(ctx context.Context, args []string) error {
	fs := newFlagSet("jobs enqueue")
	cf := addClientFlags(fs)
	file := fs.String("file", "", "enqueue each line of this file (a JSON EnqueueRequest; - reads stdin); QUEUE fills in lines without a queue")
	batch := fs.Int("batch", 500, "jobs per EnqueueBatch call with --file (1-1000)")
	priority := fs.String("priority", "", "low, normal or high")
	runAt := fs.String("run-at", "", "do not run before this RFC 3339 time")
	delay := fs.Duration("delay", 0, "do not run before this long from now")
	key := fs.String("idempotency-key", "", "a repeated key returns the first job")
	targetURL := fs.String("target-url", "", "POST the job to this URL instead of waiting for a worker")
	endpoint := fs.String("endpoint", "", "deliver the job to this endpoint id")
	maxAttempts := fs.Int("max-attempts", 0, "attempts before the job is dead-lettered (0: the queue's default)")
	headers := headerFlags{}
	fs.Var(headers, "header", "NAME=VALUE sent with each delivery (repeatable)")
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if *file != "" {
		if err := wantArgs(args, 0, 1, "sluice jobs enqueue --file FILE [QUEUE]"); err != nil {
			return err
		}
		queue := ""
		if len(args) == 1 {
			queue = args[0]
		}
		return enqueueFile(ctx, c, *file, queue, *batch, *cf.json)
	}
	if err := wantArgs(args, 1, 2, "sluice jobs enqueue QUEUE [PAYLOAD_JSON]"); err != nil {
		return err
	}
	payload := []byte("null")
	if len(args) == 2 {
		payload = []byte(args[1])
	}
	opts, err := enqueueOptions(*priority, *runAt, *delay, *key, *targetURL, *endpoint, *maxAttempts, headers)
	if err != nil {
		return err
	}
	req, err := client.NewEnqueueRequest(args[0], jsonArg(payload), opts...)
	if err != nil {
		return fmt.Errorf("PAYLOAD: %w", err)
	}
	res, err := c.EnqueueRequest(ctx, req)
	if err != nil {
		return err
	}
	if *cf.json {
		return printJSON(os.Stdout, &sluicev1.EnqueueResponse{Job: res.Job, Created: res.Created})
	}
	t := newTable(os.Stdout, "ID", "QUEUE", "STATE", "CREATED")
	t.row(res.Job.GetId(), res.Job.GetQueue(), stateName(res.Job.GetState()), strconv.FormatBool(res.Created))
	return t.flush()
}

// jsonArg is a JSON command-line argument, passed through as it is.
type jsonArg []byte

func (j jsonArg) MarshalJSON() ([]byte, error) { return j, nil }

func enqueueOptions(priority, runAt string, delay time.Duration, key, targetURL, endpoint string, maxAttempts int, headers map[string]string) ([]client.EnqueueOption, error) {
	var opts []client.EnqueueOption
	if priority != "" {
		p, err := client.ParsePriority(priority)
		if err != nil {
			return nil, fmt.Errorf("--priority: %w", err)
		}
		opts = append(opts, client.WithPriority(p))
	}
	switch {
	case runAt != "" && delay != 0:
		return nil, errors.New("--run-at and --delay: set one, not both")
	case runAt != "":
		t, err := time.Parse(time.RFC3339Nano, runAt)
		if err != nil {
			return nil, fmt.Errorf("--run-at: %w", err)
		}
		opts = append(opts, client.WithRunAt(t))
	case delay != 0:
		opts = append(opts, client.WithRunAt(time.Now().Add(delay)))
	}
	if key != "" {
		opts = append(opts, client.WithIdempotencyKey(key))
	}
	switch {
	case targetURL != "" && endpoint != "":
		return nil, errors.New("--target-url and --endpoint: set one, not both")
	case targetURL != "":
		opts = append(opts, client.WithTargetURL(targetURL))
	case endpoint != "":
		opts = append(opts, client.WithEndpoint(endpoint))
	}
	if maxAttempts != 0 {
		opts = append(opts, client.WithMaxAttempts(maxAttempts))
	}
	if len(headers) > 0 {
		opts = append(opts, client.WithHeaders(headers))
	}
	return opts, nil
}

// enqueueFile enqueues every line of path in batches of size, each batch
// all or nothing. A bad line stops before anything of its batch is sent,
// naming the line; batches before it stay enqueued.
func enqueueFile(ctx context.Context, c *client.Client, path, queue string, size int, asJSON bool) error {
	if size < 1 || size > client.MaxBatch {
		return fmt.Errorf("--batch: %d is not within 1-%d", size, client.MaxBatch)
	}
	in, total, err := openLines(path)
	if err != nil {
		return err
	}
	defer in.Close()
	bar := newProgress(total, "enqueueing")
	defer bar.finish()

	var (
		all     []*sluicev1.EnqueueResponse
		created int
		sent    int
		pending []*client.EnqueueRequest
	)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		res, err := c.EnqueueBatch(ctx, pending)
		if err != nil {
			return fmt.Errorf("lines %d-%d: %w (the %d jobs before them were enqueued)", sent+1, sent+len(pending), err, sent)
		}
		for _, r := range res {
			if r.Created {
				created++
			}
			if asJSON {
				all = append(all, &sluicev1.EnqueueResponse{Job: r.Job, Created: r.Created})
			}
		}
		sent += len(pending)
		bar.add(len(pending))
		pending = pending[:0]
		return nil
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		req := new(sluicev1.EnqueueRequest)
		if err := protojson.Unmarshal(text, req); err != nil {
			return fmt.Errorf("%s: line %d: %w (the %d jobs before its batch were enqueued)", path, line, err, sent)
		}
		if req.Queue == "" {
			req.Queue = queue
		}
		pending = append(pending, req)
		if len(pending) == size {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := flush(); err != nil {
		return err
	}
	bar.finish()
	if asJSON {
		return printJSON(os.Stdout, &sluicev1.EnqueueBatchResponse{Results: all})
	}
	_, err = fmt.Fprintf(os.Stdout, "enqueued %d jobs (%d new, %d matched an idempotency key)\n", sent, created, sent-created)
	return err
}

// openLines opens path ("-" for stdin) and counts its lines when it is a
// regular file (-1 otherwise), for the progress bar.
func openLines(path string) (io.ReadCloser, int64, error) {
	if path == "-" {
		return io.NopCloser(os.Stdin), -1, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("--file: %w", err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return f, -1, nil
	}
	var n int64
	buf := make([]byte, 64<<10)
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err != nil {
			break
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("--file: %w", err)
	}
	return f, n, nil
}

func runJobsGet(ctx context.Context, args []string) error {
	fs := newFlagSet("jobs get")
	cf := addClientFlags(fs)
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(args, 1, 1, "sluice jobs get ID"); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	job, err := c.GetJob(ctx, args[0])
	if err != nil {
		return err
	}
	if *cf.json {
		return printJSON(os.Stdout, &sluicev1.GetJobResponse{Job: job})
	}
	return printJob(os.Stdout, job)
}

// printJob prints one job as aligned "field: value" lines.
func printJob(w io.Writer, j *client.Job) error {
	payload, _ := client.ValueJSON(j.GetPayload())
	var result string
	if j.GetResult() != nil {
		r, _ := client.ValueJSON(j.GetResult())
		result = compactJSON(r)
	}
	return fieldList(w,
		"id", j.GetId(),
		"queue", j.GetQueue(),
		"state", stateName(j.GetState()),
		"priority", priorityName(j.GetPriority()),
		"attempt", attemptString(j),
		"target", targetString(j.GetTarget()),
		"idempotency key", j.GetIdempotencyKey(),
		"created", formatTime(j.GetCreatedAt()),
		"updated", formatTime(j.GetUpdatedAt()),
		"run at", formatTime(j.GetRunAt()),
		"next attempt", formatTime(j.GetNextAttemptAt()),
		"worker", j.GetWorkerId(),
		"last error", j.GetLastError(),
		"payload", compactJSON(payload),
		"result", result,
	)
}

// attemptString is "2 of 5", or "2" when the job takes the server's
// default attempts.
func attemptString(j *client.Job) string {
	if j.GetMaxAttempts() == 0 {
		return strconv.Itoa(int(j.GetAttempt()))
	}
	return fmt.Sprintf("%d of %d", j.GetAttempt(), j.GetMaxAttempts())
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

func runJobsList(ctx context.Context, args []string) error {
	fs := newFlagSet("jobs list")
	cf := addClientFlags(fs)
	queue := fs.String("queue", "", "only jobs of this queue")
	state := fs.String("state", "", "only jobs in this state (scheduled, ready, running, retrying, succeeded, dead, cancelled)")
	limit := fs.Int("limit", 50, "jobs to show (1-1000)")
	token := fs.String("page-token", "", "continue a previous listing")
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(args, 0, 0, "sluice jobs list [--queue Q] [--state S] [--limit N]"); err != nil {
		return err
	}
	q := client.JobQuery{Queue: *queue, PageSize: *limit, PageToken: *token}
	if *state != "" {
		if q.State, err = client.ParseJobState(*state); err != nil {
			return fmt.Errorf("--state: %w", err)
		}
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("--limit: %d is not within 1-1000", *limit)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	jobs, next, err := c.ListJobs(ctx, q)
	if err != nil {
		return err
	}
	if *cf.json {
		return printJSON(os.Stdout, &sluicev1.ListJobsResponse{Jobs: jobs, NextPageToken: next})
	}
	t := newTable(os.Stdout, "ID", "QUEUE", "STATE", "ATTEMPT", "PRIORITY", "UPDATED", "LAST ERROR")
	for _, j := range jobs {
		t.row(j.GetId(), j.GetQueue(), stateName(j.GetState()), strconv.Itoa(int(j.GetAttempt())),
			priorityName(j.GetPriority()), formatTime(j.GetUpdatedAt()), truncate(j.GetLastError(), 60))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(os.Stderr, "more: --page-token %s\n", next)
	}
	return nil
}

// runJobsAmend cancels or retries each job named.
func runJobsAmend(ctx context.Context, verb string, args []string) error {
	fs := newFlagSet("jobs " + verb)
	cf := addClientFlags(fs)
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(args, 1, -1, "sluice jobs "+verb+" ID..."); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	do := c.CancelJob
	if verb == "retry" {
		do = c.RetryJob
	}
	var jobs []*client.Job
	var errs []error
	for _, id := range args {
		j, err := do(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
			continue
		}
		jobs = append(jobs, j)
	}
	if *cf.json {
		if err := printJSON(os.Stdout, &sluicev1.ListJobsResponse{Jobs: jobs}); err != nil {
			return err
		}
	} else if len(jobs) > 0 {
		t := newTable(os.Stdout, "ID", "QUEUE", "STATE")
		for _, j := range jobs {
			t.row(j.GetId(), j.GetQueue(), stateName(j.GetState()))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// stateName is a job state without its JOB_STATE_ prefix, lower case.
func stateName(s client.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

func priorityName(p client.Priority) string {
	if p == sluicev1.Priority_PRIORITY_UNSPECIFIED {
		p = client.PriorityNormal
	}
	return strings.ToLower(strings.TrimPrefix(p.String(), "PRIORITY_"))
}

func targetString(t *sluicev1.Target) string {
	switch k := t.GetKind().(type) {
	case *sluicev1.Target_Url:
		return k.Url
	case *sluicev1.Target_EndpointId:
		return "endpoint " + k.EndpointId
	}
	return ""
}
