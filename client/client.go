// Package client is the Go SDK for Sluice: a typed client over the
// Connect services (JobService, DeadLetterService, QueueService,
// WorkerService). The worker runtime that claims and runs jobs lives in
// the sibling package client/worker.
//
//	c, err := client.New("http://127.0.0.1:8080", client.WithAPIKey(key))
//	res, err := c.Enqueue(ctx, "emails", map[string]string{"to": "ada@example.com"},
//		client.WithPriority(client.PriorityHigh), client.WithIdempotencyKey("welcome-ada"))
//
// Every method returns the server's error wrapped with the operation; the
// Connect code stays reachable with CodeOf (or errors.As to
// *connect.Error), so callers branch on codes such as
// connect.CodeNotFound or connect.CodeFailedPrecondition.
//
// A Client is safe for concurrent use.
package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// Protocol is the wire protocol a Client speaks. The server speaks all
// three on one port.
type Protocol int

const (
	// ProtocolConnect is the Connect protocol with binary protobuf; it
	// works over HTTP/1.1 and HTTP/2. The default.
	ProtocolConnect Protocol = iota
	// ProtocolGRPC is gRPC over HTTP/2 (h2c for http:// URLs).
	ProtocolGRPC
	// ProtocolGRPCWeb is gRPC-Web.
	ProtocolGRPCWeb
)

// String names the protocol as the CLI flags spell it.
func (p Protocol) String() string {
	switch p {
	case ProtocolConnect:
		return "connect"
	case ProtocolGRPC:
		return "grpc"
	case ProtocolGRPCWeb:
		return "grpcweb"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// ParseProtocol reads "connect", "grpc" or "grpcweb".
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToLower(s) {
	case "connect", "":
		return ProtocolConnect, nil
	case "grpc":
		return ProtocolGRPC, nil
	case "grpcweb", "grpc-web":
		return ProtocolGRPCWeb, nil
	}
	return 0, fmt.Errorf("protocol %q is not connect, grpc or grpcweb", s)
}

// Option configures a Client.
type Option func(*options)

type options struct {
	apiKey     string
	httpClient connect.HTTPClient
	protocol   Protocol
	json       bool
	extra      []connect.ClientOption
}

// WithAPIKey sends key as `Authorization: Bearer <key>` on every call.
// Without it every call fails with connect.CodeUnauthenticated.
func WithAPIKey(key string) Option { return func(o *options) { o.apiKey = key } }

// WithHTTPClient sets the HTTP client. Default: a client on a copy of
// http.DefaultTransport, speaking h2c to http:// URLs when the protocol is
// gRPC.
func WithHTTPClient(c connect.HTTPClient) Option { return func(o *options) { o.httpClient = c } }

// WithProtocol sets the wire protocol. Default ProtocolConnect.
func WithProtocol(p Protocol) Option { return func(o *options) { o.protocol = p } }

// WithJSON makes Connect and gRPC-Web calls encode messages as JSON
// instead of binary protobuf (useful when debugging with a proxy).
func WithJSON() Option { return func(o *options) { o.json = true } }

// WithConnectOptions adds options to every Connect client (interceptors,
// compression, read limits).
func WithConnectOptions(opts ...connect.ClientOption) Option {
	return func(o *options) { o.extra = append(o.extra, opts...) }
}

// Client calls a Sluice server.
type Client struct {
	jobs      sluicev1connect.JobServiceClient
	dlq       sluicev1connect.DeadLetterServiceClient
	queues    sluicev1connect.QueueServiceClient
	workers   sluicev1connect.WorkerServiceClient
	audit     sluicev1connect.AuditServiceClient
	replay    sluicev1connect.ReplayServiceClient
	sources   sluicev1connect.SourceServiceClient
	endpoints sluicev1connect.EndpointServiceClient
}

// Audit returns the AuditService client (GetJobTimeline, QueryAttempts),
// with the Client's protocol and API key.
func (c *Client) Audit() sluicev1connect.AuditServiceClient { return c.audit }

// Replay returns the ReplayService client.
func (c *Client) Replay() sluicev1connect.ReplayServiceClient { return c.replay }

// Sources returns the SourceService client (inbound webhook sources).
func (c *Client) Sources() sluicev1connect.SourceServiceClient { return c.sources }

// Endpoints returns the EndpointService client (outbound endpoints).
func (c *Client) Endpoints() sluicev1connect.EndpointServiceClient { return c.endpoints }

// New returns a Client for the server at baseURL ("http://127.0.0.1:8080").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http(s)://host[:port]", baseURL)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.protocol < ProtocolConnect || o.protocol > ProtocolGRPCWeb {
		return nil, fmt.Errorf("client: %v: unknown protocol", o.protocol)
	}
	if o.httpClient == nil {
		o.httpClient = defaultHTTPClient(o.protocol)
	}
	copts := []connect.ClientOption{}
	switch o.protocol {
	case ProtocolGRPC:
		copts = append(copts, connect.WithGRPC())
	case ProtocolGRPCWeb:
		copts = append(copts, connect.WithGRPCWeb())
	}
	if o.json {
		copts = append(copts, connect.WithProtoJSON())
	}
	if o.apiKey != "" {
		copts = append(copts, connect.WithInterceptors(bearer(o.apiKey)))
	}
	copts = append(copts, o.extra...)
	base := strings.TrimRight(baseURL, "/")
	return &Client{
		jobs:      sluicev1connect.NewJobServiceClient(o.httpClient, base, copts...),
		dlq:       sluicev1connect.NewDeadLetterServiceClient(o.httpClient, base, copts...),
		queues:    sluicev1connect.NewQueueServiceClient(o.httpClient, base, copts...),
		workers:   sluicev1connect.NewWorkerServiceClient(o.httpClient, base, copts...),
		audit:     sluicev1connect.NewAuditServiceClient(o.httpClient, base, copts...),
		replay:    sluicev1connect.NewReplayServiceClient(o.httpClient, base, copts...),
		sources:   sluicev1connect.NewSourceServiceClient(o.httpClient, base, copts...),
		endpoints: sluicev1connect.NewEndpointServiceClient(o.httpClient, base, copts...),
	}, nil
}

// defaultHTTPClient speaks HTTP/1.1 and HTTP/2, and for gRPC unencrypted
// HTTP/2 to http:// URLs (gRPC needs HTTP/2).
func defaultHTTPClient(p Protocol) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	if p == ProtocolGRPC {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP2(true)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: t}
}

// bearer adds the API key to every request, unary and streaming.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// CodeOf returns the Connect code of err: the server's code for an error
// a Client method returned, connect.CodeUnknown for other errors, 0 for
// nil.
func CodeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	return connect.CodeOf(err)
}

// IsNotFound reports whether err is the server's not_found.
func IsNotFound(err error) bool { return err != nil && connect.CodeOf(err) == connect.CodeNotFound }

// IsStaleLease reports whether err says a lease token is stale or expired
// (failed_precondition from Heartbeat, Complete or Fail).
func IsStaleLease(err error) bool {
	return err != nil && connect.CodeOf(err) == connect.CodeFailedPrecondition
}

// ErrorMessage returns the server's message of err without the code
// prefix, or err.Error() for errors that did not come from the server.
func ErrorMessage(err error) string {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return cerr.Message()
	}
	return err.Error()
}

// wrap names the operation in a server error, keeping its code reachable.
func wrap(op string, err error) error {
	return fmt.Errorf("%s: %w", op, err)
}
