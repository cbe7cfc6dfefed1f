package main

// Shared pieces of the client commands (jobs, dlq, queues, and any other
// command that talks to a server): the --server/--api-key/--json flags,
// tables, JSON output and the progress bar.

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/client"
)

// defaultServer is where client commands go without --server.
const defaultServer = "http://127.0.0.1:8080"

// clientFlags are the flags every client command takes; each also reads
// SLUICE_<FLAG> (SLUICE_SERVER, SLUICE_API_KEY, ...).
type clientFlags struct {
	server   *string
	apiKey   *string
	protocol *string
	json     *bool
}

// addClientFlags adds --server, --api-key, --protocol and --json to fs.
func addClientFlags(fs flagSet) clientFlags {
	return clientFlags{
		server:   fs.String("server", defaultServer, "base URL of the Sluice server"),
		apiKey:   fs.String("api-key", "", "API key (Authorization: Bearer)"),
		protocol: fs.String("protocol", "connect", "wire protocol: connect, grpc or grpcweb"),
		json:     fs.Bool("json", false, "print the answer as one JSON document (protobuf JSON) for scripts"),
	}
}

// client returns an SDK client for the flags.
func (f clientFlags) client() (*client.Client, error) {
	p, err := client.ParseProtocol(*f.protocol)
	if err != nil {
		return nil, fmt.Errorf("--protocol: %w", err)
	}
	if *f.apiKey == "" {
		return nil, fmt.Errorf("--api-key (or SLUICE_API_KEY) is required")
	}
	c, err := client.New(*f.server, client.WithAPIKey(*f.apiKey), client.WithProtocol(p))
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	return c, nil
}

// parseClientArgs parses flags anywhere among the arguments ("jobs get ID
// --json" as well as "jobs get --json ID"), applies the environment to
// unset flags, and returns the positional arguments. Arguments after "--"
// are positional.
func parseClientArgs(fs flagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.FlagSet.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Parsing nothing more keeps the flags set above and applies the
	// environment to the others.
	if err := fs.parse(nil); err != nil {
		return nil, err
	}
	return positional, nil
}

// wantArgs checks the number of positional arguments.
func wantArgs(args []string, min, max int, usage string) error {
	if len(args) < min || (max >= 0 && len(args) > max) {
		return fmt.Errorf("usage: %s", usage)
	}
	return nil
}

// printJSON writes m as one indented protobuf JSON document.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode answer as JSON: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// table prints aligned columns.
type table struct {
	tw *tabwriter.Writer
}

// newTable starts a table with a header row.
func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(headers...)
	return t
}

// row adds a row; tabs and newlines inside cells become spaces.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// flush writes the table out.
func (t *table) flush() error { return t.tw.Flush() }

// fieldList prints "key: value" lines aligned, for one record.
func fieldList(w io.Writer, pairs ...string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], pairs[i+1])
	}
	return tw.Flush()
}

// formatTime prints a timestamp in UTC to the second; "" when unset.
func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format("2006-01-02 15:04:05")
}

// truncate shortens s to n runes with an ellipsis.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// progress is a progress bar on stderr, shown only when stderr is a
// terminal; a nil *progress does nothing, so callers need no checks.
type progress struct {
	bar *progressbar.ProgressBar
}

// newProgress starts a bar for total units (-1: unknown, a spinner), or
// returns nil when stderr is not a terminal.
func newProgress(total int64, description string) *progress {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

// add advances the bar by n units.
func (p *progress) add(n int) {
	if p != nil {
		_ = p.bar.Add(n)
	}
}

// finish clears the bar.
func (p *progress) finish() {
	if p != nil {
		_ = p.bar.Finish()
	}
}
