package client

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"connectrpc.com/connect"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// MaxDeadLetterSelection is the most dead letters one RetryDeadLetters or
// PurgeDeadLetters call may select.
const MaxDeadLetterSelection = 10000

// DeadLetterQuery selects dead letters to list.
type DeadLetterQuery struct {
	// Filter selects; nil selects every dead letter.
	Filter *DeadLetterFilter
	// PageSize is the dead letters per page: at most 1,000; 0 means the
	// server's default (100).
	PageSize  int
	PageToken string
}

// ListDeadLetters returns one page of dead letters, newest death first,
// and the token of the next page ("" on the last). A filter on target or
// error text may answer a short page with a next token.
func (c *Client) ListDeadLetters(ctx context.Context, q DeadLetterQuery) ([]*DeadLetter, string, error) {
	resp, err := c.dlq.ListDeadLetters(ctx, connect.NewRequest(&sluicev1.ListDeadLettersRequest{
		Filter: q.Filter, PageSize: int32(q.PageSize), PageToken: q.PageToken,
	}))
	if err != nil {
		return nil, "", wrap("list dead letters", err)
	}
	return resp.Msg.DeadLetters, resp.Msg.NextPageToken, nil
}

// DeadLetters iterates over every dead letter q selects, page by page.
func (c *Client) DeadLetters(ctx context.Context, q DeadLetterQuery) iter.Seq2[*DeadLetter, error] {
	return paginate(q.PageToken, func(token string) ([]*DeadLetter, string, error) {
		q.PageToken = token
		return c.ListDeadLetters(ctx, q)
	})
}

// Selection names dead letters by id or by filter; set one, not both.
type Selection struct {
	IDs    []string
	Filter *DeadLetterFilter
}

func (s Selection) check() error {
	switch {
	case len(s.IDs) > 0 && s.Filter != nil:
		return errors.New("set ids or filter, not both")
	case len(s.IDs) == 0 && s.Filter == nil:
		return errors.New("set ids or filter")
	}
	return nil
}

// RetryOption sets an optional field of a dead-letter retry.
type RetryOption func(*sluicev1.RetryDeadLettersRequest) error

// WithReason keeps why the jobs are retried, in the log and on each job.
func WithReason(reason string) RetryOption {
	return func(r *sluicev1.RetryDeadLettersRequest) error { r.Reason = reason; return nil }
}

// WithPayloadOverride replaces the payload of every retried job with v
// (any JSON-marshalable value; nil is JSON null).
func WithPayloadOverride(v any) RetryOption {
	return func(r *sluicev1.RetryDeadLettersRequest) error {
		val, err := JSONValue(v)
		if err != nil {
			return fmt.Errorf("payload override: %w", err)
		}
		r.PayloadOverride = val
		return nil
	}
}

// RetryDeadLetters sends the selected dead jobs round again, each with a
// fresh attempt budget. It returns how many were retried; jobs that were
// no longer dead are not counted.
func (c *Client) RetryDeadLetters(ctx context.Context, sel Selection, opts ...RetryOption) (int, error) {
	if err := sel.check(); err != nil {
		return 0, fmt.Errorf("retry dead letters: %w", err)
	}
	req := &sluicev1.RetryDeadLettersRequest{Ids: sel.IDs, Filter: sel.Filter}
	for _, opt := range opts {
		if err := opt(req); err != nil {
			return 0, fmt.Errorf("retry dead letters: %w", err)
		}
	}
	resp, err := c.dlq.RetryDeadLetters(ctx, connect.NewRequest(req))
	if err != nil {
		return 0, wrap("retry dead letters", err)
	}
	return int(resp.Msg.Retried), nil
}

// PurgeDeadLetters deletes the selected dead jobs for good and returns
// how many were purged. It cannot be undone.
func (c *Client) PurgeDeadLetters(ctx context.Context, sel Selection) (int, error) {
	if err := sel.check(); err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	resp, err := c.dlq.PurgeDeadLetters(ctx, connect.NewRequest(&sluicev1.PurgeDeadLettersRequest{
		Ids: sel.IDs, Filter: sel.Filter, Confirm: true,
	}))
	if err != nil {
		return 0, wrap("purge dead letters", err)
	}
	return int(resp.Msg.Purged), nil
}
