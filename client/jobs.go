package client

import (
	"context"
	"iter"

	"connectrpc.com/connect"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// GetJob returns a job's current state; IsNotFound(err) when the tenant
// has no such job.
func (c *Client) GetJob(ctx context.Context, id string) (*Job, error) {
	resp, err := c.jobs.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
	if err != nil {
		return nil, wrap("get job", err)
	}
	return resp.Msg.Job, nil
}

// JobQuery selects jobs to list. Zero fields select everything.
type JobQuery struct {
	Queue string
	State JobState
	// PageSize is the jobs per page: at most 1,000; 0 means the server's
	// default (100).
	PageSize int
	// PageToken continues a previous listing.
	PageToken string
}

// ListJobs returns one page of jobs, newest first, and the token of the
// next page ("" on the last).
func (c *Client) ListJobs(ctx context.Context, q JobQuery) ([]*Job, string, error) {
	resp, err := c.jobs.ListJobs(ctx, connect.NewRequest(&sluicev1.ListJobsRequest{
		Queue: q.Queue, State: q.State, PageSize: int32(q.PageSize), PageToken: q.PageToken,
	}))
	if err != nil {
		return nil, "", wrap("list jobs", err)
	}
	return resp.Msg.Jobs, resp.Msg.NextPageToken, nil
}

// Jobs iterates over every job q selects, page by page, newest first. It
// stops at the first error, yielding it.
func (c *Client) Jobs(ctx context.Context, q JobQuery) iter.Seq2[*Job, error] {
	return paginate(q.PageToken, func(token string) ([]*Job, string, error) {
		q.PageToken = token
		return c.ListJobs(ctx, q)
	})
}

// CancelJob cancels a scheduled, ready or retrying job.
func (c *Client) CancelJob(ctx context.Context, id string) (*Job, error) {
	resp, err := c.jobs.CancelJob(ctx, connect.NewRequest(&sluicev1.CancelJobRequest{Id: id}))
	if err != nil {
		return nil, wrap("cancel job", err)
	}
	return resp.Msg.Job, nil
}

// RetryJob sends a dead or cancelled job round again with a fresh attempt
// budget.
func (c *Client) RetryJob(ctx context.Context, id string) (*Job, error) {
	resp, err := c.jobs.RetryJob(ctx, connect.NewRequest(&sluicev1.RetryJobRequest{Id: id}))
	if err != nil {
		return nil, wrap("retry job", err)
	}
	return resp.Msg.Job, nil
}

// paginate turns a page function into an iterator over every item.
func paginate[T any](token string, page func(token string) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for {
			items, next, err := page(token)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" || next == token {
				return
			}
			token = next
		}
	}
}
