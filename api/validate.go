package api

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

var queueName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Limits bound what a request may carry.
type Limits struct {
	// MaxPayloadBytes of a job's JSON payload. Default 1 MiB.
	MaxPayloadBytes int
	// MaxBatch jobs per EnqueueBatch. Default 1000.
	MaxBatch int
	// MaxAttempts a job may ask for. Default 100.
	MaxAttempts int32
	// MaxTimeout of one attempt. Default 5m.
	MaxTimeout time.Duration
}

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxPayloadBytes == 0 {
		l.MaxPayloadBytes = 1 << 20
	}
	if l.MaxBatch == 0 {
		l.MaxBatch = 1000
	}
	if l.MaxAttempts == 0 {
		l.MaxAttempts = 100
	}
	if l.MaxTimeout == 0 {
		l.MaxTimeout = 5 * time.Minute
	}
	return l
}

// fieldError is bad input in one field; its message names the field.
func fieldError(code connect.Code, field, format string, args ...any) *connect.Error {
	return connect.NewError(code, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// reservedHeaders may not be set by a job: Sluice or the transport owns them.
var reservedHeaders = map[string]bool{
	"content-length": true, "host": true, "transfer-encoding": true, "connection": true,
	"webhook-id": true, "webhook-timestamp": true, "webhook-signature": true,
}

// jobSpec validates an enqueue request and returns its normalised spec.
// prefix names the request in error messages ("" or "jobs[3].").
func (l Limits) jobSpec(req *sluicev1.EnqueueRequest, prefix string, now time.Time) (*eventv1.JobSpec, *connect.Error) {
	invalid := func(field, format string, args ...any) *connect.Error {
		return fieldError(connect.CodeInvalidArgument, prefix+field, format, args...)
	}
	if !queueName.MatchString(req.Queue) {
		if req.Queue == "" {
			return nil, invalid("queue", "required")
		}
		return nil, invalid("queue", "%q is not a queue name: use 1-128 of A-Z a-z 0-9 . _ -", req.Queue)
	}
	if req.Payload == nil {
		return nil, invalid("payload", "required (any JSON value; null is fine)")
	}
	payload, cerr := l.payload(req.Payload, prefix+"payload")
	if cerr != nil {
		return nil, cerr
	}
	spec := &eventv1.JobSpec{
		Queue:          req.Queue,
		Payload:        payload,
		IdempotencyKey: req.IdempotencyKey,
		Priority:       req.Priority,
		MaxAttempts:    req.MaxAttempts,
		RetryPolicy:    req.RetryPolicy,
		Timeout:        req.Timeout,
		Headers:        req.Headers,
		RunAt:          req.RunAt,
		CreatedAt:      timestamppb.New(now),
	}
	if cerr := validateTarget(req.Target, prefix); cerr != nil {
		return nil, cerr
	}
	spec.Target = req.Target
	if len(req.IdempotencyKey) > 256 {
		return nil, invalid("idempotencyKey", "%d characters, at most 256", len(req.IdempotencyKey))
	}
	if _, ok := sluicev1.Priority_name[int32(req.Priority)]; !ok {
		return nil, invalid("priority", "unknown priority %d", req.Priority)
	}
	if req.MaxAttempts < 0 || req.MaxAttempts > l.MaxAttempts {
		return nil, invalid("maxAttempts", "%d is outside 0..%d", req.MaxAttempts, l.MaxAttempts)
	}
	if req.Timeout != nil {
		if err := req.Timeout.CheckValid(); err != nil || req.Timeout.AsDuration() <= 0 || req.Timeout.AsDuration() > l.MaxTimeout {
			return nil, invalid("timeout", "must be positive and at most %s", l.MaxTimeout)
		}
	}
	if req.RunAt != nil {
		if err := req.RunAt.CheckValid(); err != nil {
			return nil, invalid("runAt", "%v", err)
		}
	}
	if cerr := validateRetryPolicy(req.RetryPolicy, prefix); cerr != nil {
		return nil, cerr
	}
	for name, value := range req.Headers {
		field := prefix + "headers[" + name + "]"
		switch {
		case !validHeaderName(name):
			return nil, fieldError(connect.CodeInvalidArgument, field, "not a valid header name")
		case reservedHeaders[strings.ToLower(name)]:
			return nil, fieldError(connect.CodeInvalidArgument, field, "reserved; Sluice sets it")
		case strings.ContainsAny(value, "\r\n\x00"):
			return nil, fieldError(connect.CodeInvalidArgument, field, "value contains a control character")
		}
	}
	return spec, nil
}

// payload encodes a payload given in field and checks its size.
func (l Limits) payload(v *structpb.Value, field string) ([]byte, *connect.Error) {
	b, err := payloadJSON(v)
	if err != nil {
		return nil, fieldError(connect.CodeInvalidArgument, field, "not valid JSON: %v", err)
	}
	if len(b) > l.MaxPayloadBytes {
		return nil, fieldError(connect.CodeResourceExhausted, field,
			"%d bytes exceeds the limit of %d bytes", len(b), l.MaxPayloadBytes)
	}
	return b, nil
}

func validateTarget(t *sluicev1.Target, prefix string) *connect.Error {
	switch kind := t.GetKind().(type) {
	case nil:
		return nil // a worker job
	case *sluicev1.Target_Url:
		u, err := url.Parse(kind.Url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fieldError(connect.CodeInvalidArgument, prefix+"target.url", "%q is not an absolute http or https URL", kind.Url)
		}
		if u.User != nil {
			return fieldError(connect.CodeInvalidArgument, prefix+"target.url", "must not carry credentials")
		}
		return nil
	case *sluicev1.Target_EndpointId:
		if kind.EndpointId == "" {
			return fieldError(connect.CodeInvalidArgument, prefix+"target.endpointId", "required")
		}
		return nil // its existence is checked with the tenant (checkEndpointTarget)
	default:
		return fieldError(connect.CodeInvalidArgument, prefix+"target", "unknown target kind")
	}
}

func validateRetryPolicy(p *sluicev1.RetryPolicy, prefix string) *connect.Error {
	if p == nil {
		return nil
	}
	field := prefix + "retryPolicy"
	if len(p.Schedule) > 0 && p.Exponential != nil {
		return fieldError(connect.CodeInvalidArgument, field, "set schedule or exponential, not both")
	}
	for i, s := range p.Schedule {
		if d, err := time.ParseDuration(s); err != nil || d < 0 {
			return fieldError(connect.CodeInvalidArgument, fmt.Sprintf("%s.schedule[%d]", field, i), "%q is not a duration like 5s or 5m", s)
		}
	}
	if e := p.Exponential; e != nil {
		for name, s := range map[string]string{"initial": e.Initial, "max": e.Max} {
			if d, err := time.ParseDuration(s); err != nil || d <= 0 {
				return fieldError(connect.CodeInvalidArgument, field+".exponential."+name, "%q is not a positive duration like 5s", s)
			}
		}
		if e.Multiplier < 1 || math.IsInf(e.Multiplier, 0) {
			return fieldError(connect.CodeInvalidArgument, field+".exponential.multiplier", "%v: must be at least 1", e.Multiplier)
		}
	}
	return nil
}

// payloadJSON encodes a payload as compact JSON with sorted keys.
func payloadJSON(v *structpb.Value) ([]byte, error) {
	return json.Marshal(v.AsInterface())
}

// payloadValue decodes a payload encoded by payloadJSON.
func payloadValue(b []byte) *structpb.Value {
	v := structpb.NewNullValue()
	_ = json.Unmarshal(b, v)
	return v
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if c > 127 || !isTokenChar(byte(c)) {
			return false
		}
	}
	return http.CanonicalHeaderKey(name) != ""
}

func isTokenChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
