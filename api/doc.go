// Package api is Sluice's HTTP surface: the Connect services (Connect,
// gRPC and gRPC-Web on one port), authentication and health endpoints.
// Connect error codes are chosen here and nowhere else.
package api
