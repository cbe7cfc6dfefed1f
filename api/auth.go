package api

import (
	"context"
	"errors"
	"strings"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/tenancy"
)

// Authenticator resolves API keys to principals.
type Authenticator interface {
	Authenticate(key string) (tenancy.Principal, error)
}

type principalKey struct{}

// principalFrom returns the principal an authenticated call acts as.
func principalFrom(ctx context.Context) tenancy.Principal {
	p, _ := ctx.Value(principalKey{}).(tenancy.Principal)
	return p
}

var errUnauthenticated = errors.New("missing or invalid API key: send Authorization: Bearer <api key>")

// authInterceptor rejects calls without a valid bearer key and puts the
// caller's principal in the context.
type authInterceptor struct{ auth Authenticator }

func (a authInterceptor) authenticate(ctx context.Context, header string) (context.Context, error) {
	key, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || key == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	p, err := a.auth.Authenticate(strings.TrimSpace(key))
	if err != nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

func (a authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := a.authenticate(ctx, req.Header().Get("Authorization"))
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := a.authenticate(ctx, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
