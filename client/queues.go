package client

import (
	"context"

	"connectrpc.com/connect"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// GetQueue returns a queue's settings and job counts.
func (c *Client) GetQueue(ctx context.Context, name string) (*QueueInfo, error) {
	resp, err := c.queues.GetQueue(ctx, connect.NewRequest(&sluicev1.GetQueueRequest{Name: name}))
	if err != nil {
		return nil, wrap("get queue", err)
	}
	return resp.Msg.Queue, nil
}

// ListQueues returns every queue that has settings or jobs, by name.
func (c *Client) ListQueues(ctx context.Context) ([]*QueueInfo, error) {
	resp, err := c.queues.ListQueues(ctx, connect.NewRequest(&sluicev1.ListQueuesRequest{}))
	if err != nil {
		return nil, wrap("list queues", err)
	}
	return resp.Msg.Queues, nil
}

// UpdateQueue changes the settings set in u (u.Name names the queue).
func (c *Client) UpdateQueue(ctx context.Context, u *QueueUpdate) (*Queue, error) {
	resp, err := c.queues.UpdateQueue(ctx, connect.NewRequest(u))
	if err != nil {
		return nil, wrap("update queue", err)
	}
	return resp.Msg.Queue, nil
}

// PauseQueue stops delivery and claims on a queue; its jobs wait and new
// ones are accepted.
func (c *Client) PauseQueue(ctx context.Context, name string) (*Queue, error) {
	resp, err := c.queues.PauseQueue(ctx, connect.NewRequest(&sluicev1.PauseQueueRequest{Name: name}))
	if err != nil {
		return nil, wrap("pause queue", err)
	}
	return resp.Msg.Queue, nil
}

// ResumeQueue lets a paused queue's jobs run again, oldest first.
func (c *Client) ResumeQueue(ctx context.Context, name string) (*Queue, error) {
	resp, err := c.queues.ResumeQueue(ctx, connect.NewRequest(&sluicev1.ResumeQueueRequest{Name: name}))
	if err != nil {
		return nil, wrap("resume queue", err)
	}
	return resp.Msg.Queue, nil
}
