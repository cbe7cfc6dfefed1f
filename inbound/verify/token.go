package verify

import (
	"fmt"
	"net/http"
	"time"
)

// Token verifies that a header carries a shared value, compared in
// constant time (lengths included).
type Token struct {
	// Header carrying the token. Required.
	Header string
	// Value the header must hold exactly. Required.
	Value []byte
}

// Kind is "token".
func (Token) Kind() string { return KindToken }

// Verify compares the header with the value.
func (t Token) Verify(h http.Header, _ []byte, _ time.Time) error {
	vals := h.Values(t.Header)
	if len(vals) == 0 {
		return fmt.Errorf("%s: %w", t.Header, ErrMissing)
	}
	if len(vals) > 1 {
		return fmt.Errorf("%s: sent %d times: %w", t.Header, len(vals), ErrMalformed)
	}
	if !equal([]byte(vals[0]), t.Value) {
		return fmt.Errorf("%s: %w", t.Header, ErrMismatch)
	}
	return nil
}
