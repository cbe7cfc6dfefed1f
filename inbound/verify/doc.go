// Package verify checks that an inbound webhook request comes from its
// provider: GitHub (X-Hub-Signature-256), Stripe (Stripe-Signature),
// Standard Webhooks (webhook-id/-timestamp/-signature, v1 HMAC and v1a
// Ed25519), a generic HMAC header, a shared token, or nothing.
//
// Every comparison of a signature or token is constant-time. Checks that
// involve a timestamp take the current time as an argument. A Verifier is
// safe for concurrent use; it never retains the request.
package verify
