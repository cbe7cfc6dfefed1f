package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/projections"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// Bounds of dead-letter requests.
const (
	maxReasonBytes   = 1024
	maxTargetBytes   = 2048
	maxContainsBytes = 1024
	maxJobIDBytes    = 128
)

// DeadLetterService implements sluice.v1.DeadLetterService.
type DeadLetterService struct {
	store  DeadLetterStore
	amend  *amender
	limits Limits
	logger *slog.Logger
}

var _ sluicev1connect.DeadLetterServiceHandler = (*DeadLetterService)(nil)

// ListDeadLetters lists dead jobs, latest death first, with their
// attempts.
func (s *DeadLetterService) ListDeadLetters(ctx context.Context, req *connect.Request[sluicev1.ListDeadLettersRequest]) (*connect.Response[sluicev1.ListDeadLettersResponse], error) {
	m := req.Msg
	if m.PageSize < 0 || m.PageSize > projections.MaxPageSize {
		return nil, fieldError(connect.CodeInvalidArgument, "pageSize", "%d is outside 0..%d", m.PageSize, projections.MaxPageSize)
	}
	f, cerr := deadLetterFilter(m.Filter, "filter")
	if cerr != nil {
		return nil, cerr
	}
	if m.Queue != "" {
		if !queueName.MatchString(m.Queue) {
			return nil, fieldError(connect.CodeInvalidArgument, "queue", "%q is not a queue name", m.Queue)
		}
		if f.Queue != "" && f.Queue != m.Queue {
			return nil, fieldError(connect.CodeInvalidArgument, "filter.queue", "%q differs from queue %q", f.Queue, m.Queue)
		}
		f.Queue = m.Queue
	}
	dls, next, err := s.store.ListDeadLetters(ctx, principalFrom(ctx).TenantID, projections.DeadLetterQuery{
		DeadLetterFilter: f, PageSize: int(m.PageSize), PageToken: m.PageToken,
	})
	if err != nil {
		return nil, s.readError(ctx, "list dead letters", err)
	}
	return connect.NewResponse(&sluicev1.ListDeadLettersResponse{DeadLetters: dls, NextPageToken: next}), nil
}

// RetryDeadLetters sends the selected dead jobs round again.
func (s *DeadLetterService) RetryDeadLetters(ctx context.Context, req *connect.Request[sluicev1.RetryDeadLettersRequest]) (*connect.Response[sluicev1.RetryDeadLettersResponse], error) {
	m := req.Msg
	o := retryOrder{reason: m.Reason, from: []sluicev1.JobState{sluicev1.JobState_JOB_STATE_DEAD}}
	if len(m.Reason) > maxReasonBytes {
		return nil, fieldError(connect.CodeInvalidArgument, "reason", "%d bytes, at most %d", len(m.Reason), maxReasonBytes)
	}
	if m.PayloadOverride != nil {
		var cerr *connect.Error
		if o.payload, cerr = s.limits.payload(m.PayloadOverride, "payloadOverride"); cerr != nil {
			return nil, cerr
		}
	}
	ids, err := s.selection(ctx, m.Ids, m.Filter)
	if err != nil {
		return nil, err
	}
	retried, err := s.amend.retry(ctx, principalFrom(ctx), ids, o)
	if err != nil {
		return nil, amendError(ctx, s.logger, "retry dead letters", retried, err)
	}
	s.logger.InfoContext(ctx, "retried dead letters", "tenant_id", principalFrom(ctx).TenantID,
		"key_id", principalFrom(ctx).KeyID, "selected", len(ids), "retried", retried)
	return connect.NewResponse(&sluicev1.RetryDeadLettersResponse{Retried: int32(retried)}), nil
}

// PurgeDeadLetters deletes the selected dead jobs for good.
func (s *DeadLetterService) PurgeDeadLetters(ctx context.Context, req *connect.Request[sluicev1.PurgeDeadLettersRequest]) (*connect.Response[sluicev1.PurgeDeadLettersResponse], error) {
	m := req.Msg
	if !m.Confirm {
		return nil, fieldError(connect.CodeInvalidArgument, "confirm", "must be true: purged jobs are deleted for good")
	}
	ids, err := s.selection(ctx, m.Ids, m.Filter)
	if err != nil {
		return nil, err
	}
	purged, err := s.amend.purge(ctx, principalFrom(ctx), ids)
	if err != nil {
		return nil, amendError(ctx, s.logger, "purge dead letters", purged, err)
	}
	s.logger.InfoContext(ctx, "purged dead letters", "tenant_id", principalFrom(ctx).TenantID,
		"key_id", principalFrom(ctx).KeyID, "selected", len(ids), "purged", purged)
	return connect.NewResponse(&sluicev1.PurgeDeadLettersResponse{Purged: int32(purged)}), nil
}

// selection returns the ids of the jobs a retry or purge acts on: ids,
// without repeats, or the dead letters filter matches. A single id of no
// job of the caller's tenant is not_found; more ids are not checked here.
func (s *DeadLetterService) selection(ctx context.Context, ids []string, filter *sluicev1.DeadLetterFilter) ([]string, error) {
	switch {
	case len(ids) > 0 && filter != nil:
		return nil, fieldError(connect.CodeInvalidArgument, "filter", "set ids or filter, not both")
	case len(ids) == 0 && filter == nil:
		return nil, fieldError(connect.CodeInvalidArgument, "ids", "select jobs: set ids or filter")
	case len(ids) > maxSelection:
		return nil, fieldError(connect.CodeInvalidArgument, "ids", "%d ids, at most %d per call", len(ids), maxSelection)
	case len(ids) > 0:
		return s.selectIDs(ctx, ids)
	}
	f, cerr := deadLetterFilter(filter, "filter")
	if cerr != nil {
		return nil, cerr
	}
	if f == (projections.DeadLetterFilter{}) {
		return nil, fieldError(connect.CodeInvalidArgument, "filter",
			"empty: set at least one of queue, target, errorContains, diedAfter, diedBefore (diedBefore: now selects every dead letter)")
	}
	found, more, err := s.store.FindDeadLetters(ctx, principalFrom(ctx).TenantID, f, maxSelection)
	if err != nil {
		return nil, s.readError(ctx, "find dead letters", err)
	}
	if more {
		return nil, fieldError(connect.CodeInvalidArgument, "filter",
			"matches more than %d dead letters, the most one call acts on: narrow it (diedBefore, queue, target) and call again", maxSelection)
	}
	return found, nil
}

// selectIDs checks ids and drops repeats.
func (s *DeadLetterService) selectIDs(ctx context.Context, ids []string) ([]string, error) {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for i, id := range ids {
		if id == "" || len(id) > maxJobIDBytes {
			return nil, fieldError(connect.CodeInvalidArgument, fmt.Sprintf("ids[%d]", i), "not a job id")
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	if len(out) > 1 {
		return out, nil
	}
	states, err := s.store.JobStates(ctx, principalFrom(ctx).TenantID, out)
	if err != nil {
		return nil, s.readError(ctx, "read job", err)
	}
	if _, ok := states[out[0]]; !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("job %s not found", out[0]))
	}
	return out, nil
}

// deadLetterFilter checks a filter; field names it in errors.
func deadLetterFilter(f *sluicev1.DeadLetterFilter, field string) (projections.DeadLetterFilter, *connect.Error) {
	var out projections.DeadLetterFilter
	if f == nil {
		return out, nil
	}
	invalid := func(name, format string, args ...any) *connect.Error {
		return fieldError(connect.CodeInvalidArgument, field+"."+name, format, args...)
	}
	switch {
	case f.Queue != "" && !queueName.MatchString(f.Queue):
		return out, invalid("queue", "%q is not a queue name", f.Queue)
	case len(f.Target) > maxTargetBytes:
		return out, invalid("target", "%d bytes, at most %d", len(f.Target), maxTargetBytes)
	case len(f.ErrorContains) > maxContainsBytes:
		return out, invalid("errorContains", "%d bytes, at most %d", len(f.ErrorContains), maxContainsBytes)
	}
	out = projections.DeadLetterFilter{Queue: f.Queue, Target: f.Target, ErrorContains: f.ErrorContains}
	if f.DiedAfter != nil {
		if err := f.DiedAfter.CheckValid(); err != nil {
			return out, invalid("diedAfter", "%v", err)
		}
		out.DiedAfter = f.DiedAfter.AsTime()
	}
	if f.DiedBefore != nil {
		if err := f.DiedBefore.CheckValid(); err != nil {
			return out, invalid("diedBefore", "%v", err)
		}
		out.DiedBefore = f.DiedBefore.AsTime()
	}
	if f.DiedAfter != nil && f.DiedBefore != nil && !out.DiedBefore.After(out.DiedAfter) {
		return out, invalid("diedBefore", "must be after diedAfter")
	}
	return out, nil
}

// readError answers a failed read of the read model: bad query arguments
// name their field, anything else is unavailable.
func (s *DeadLetterService) readError(ctx context.Context, op string, err error) error {
	var bad *projections.FieldError
	if errors.As(err, &bad) {
		return fieldError(connect.CodeInvalidArgument, bad.Field, "%s", bad.Reason)
	}
	s.logger.ErrorContext(ctx, op, "error", err)
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s failed; retry it", op))
}
