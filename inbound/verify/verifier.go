package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"net/http"
	"time"
)

// Verifier checks one request. now is the time to measure signed
// timestamps against.
type Verifier interface {
	Verify(h http.Header, body []byte, now time.Time) error
	// Kind names the verification ("github", "stripe", ...).
	Kind() string
}

// Kind names, as recorded with every inbox record.
const (
	KindGitHub           = "github"
	KindStripe           = "stripe"
	KindStandardWebhooks = "standardWebhooks"
	KindHMAC             = "hmac"
	KindToken            = "token"
	KindNone             = "none"
)

// None accepts every request.
type None struct{}

// Verify accepts the request.
func (None) Verify(http.Header, []byte, time.Time) error { return nil }

// Kind is "none".
func (None) Kind() string { return KindNone }

// equal compares two byte strings in constant time, also hiding their
// lengths: both are hashed first.
func equal(a, b []byte) bool {
	ha, hb := sha256.Sum256(a), sha256.Sum256(b)
	return hmac.Equal(ha[:], hb[:])
}

// within reports whether t is no further than tolerance from now, either
// way.
func within(t, now time.Time, tolerance time.Duration) bool {
	d := now.Sub(t)
	return d <= tolerance && d >= -tolerance
}
