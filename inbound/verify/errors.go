package verify

import "errors"

// Reasons a request fails verification. Verify wraps one of them with
// what was wrong; errors.Is finds it.
var (
	// ErrMissing: the request lacks a header the verification needs.
	ErrMissing = errors.New("signature header missing")
	// ErrMalformed: a header is present but cannot be parsed.
	ErrMalformed = errors.New("signature header malformed")
	// ErrTimestamp: the signed timestamp is too far from now (a replay,
	// or a clock far off).
	ErrTimestamp = errors.New("signature timestamp outside tolerance")
	// ErrMismatch: no signature or token matches.
	ErrMismatch = errors.New("signature does not match")
)

// FieldError is a verification setting that is not valid; Field is its
// path in the request ("verification.github.secret").
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }
