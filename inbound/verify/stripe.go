package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HeaderStripeSignature carries Stripe's signatures.
const HeaderStripeSignature = "Stripe-Signature"

// StripeTolerance is how far Stripe's signed timestamp may be from now.
const StripeTolerance = 300 * time.Second

// Stripe verifies Stripe-Signature: "t=<unix seconds>,v1=<hex>,...", each
// v1 the hex HMAC-SHA256 of t "." body. One matching v1 under any of
// Secrets is enough (Stripe sends several while a secret rolls); other
// schemes (v0) are ignored.
type Stripe struct {
	Secrets [][]byte
	// Tolerance of the timestamp either way. Default StripeTolerance.
	Tolerance time.Duration
}

// Kind is "stripe".
func (Stripe) Kind() string { return KindStripe }

// Verify checks the timestamp, then the signatures.
func (s Stripe) Verify(h http.Header, body []byte, now time.Time) error {
	v := h.Get(HeaderStripeSignature)
	if v == "" {
		return fmt.Errorf("%s: %w", HeaderStripeSignature, ErrMissing)
	}
	sig, err := ParseStripeSignature(v)
	if err != nil {
		return fmt.Errorf("%s: %w", HeaderStripeSignature, err)
	}
	tolerance := s.Tolerance
	if tolerance == 0 {
		tolerance = StripeTolerance
	}
	if !within(time.Unix(sig.Timestamp, 0), now, tolerance) {
		return fmt.Errorf("%s: t=%d: %w", HeaderStripeSignature, sig.Timestamp, ErrTimestamp)
	}
	ts := strconv.FormatInt(sig.Timestamp, 10)
	for _, secret := range s.Secrets {
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		want := mac.Sum(nil)
		matched := false
		for _, v1 := range sig.V1 {
			// Every candidate is compared, so timing says nothing of
			// which one matched.
			matched = hmac.Equal(want, v1) || matched
		}
		if matched {
			return nil
		}
	}
	return fmt.Errorf("%s: %w", HeaderStripeSignature, ErrMismatch)
}

// StripeSignature is a parsed Stripe-Signature header.
type StripeSignature struct {
	Timestamp int64
	// V1 are the decoded v1 signatures.
	V1 [][]byte
}

// maxStripeSignatures bounds the v1 entries one header may carry.
const maxStripeSignatures = 16

// ParseStripeSignature parses "t=...,v1=...[,v1=...]". It needs exactly
// one t and at least one v1; other keys are skipped.
func ParseStripeSignature(v string) (StripeSignature, error) {
	var sig StripeSignature
	seenT := false
	for _, item := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return StripeSignature{}, fmt.Errorf("item %q is not key=value: %w", item, ErrMalformed)
		}
		switch k {
		case "t":
			if seenT {
				return StripeSignature{}, fmt.Errorf("t given twice: %w", ErrMalformed)
			}
			t, err := strconv.ParseInt(val, 10, 64)
			if err != nil || t <= 0 {
				return StripeSignature{}, fmt.Errorf("t=%q is not a unix time: %w", val, ErrMalformed)
			}
			sig.Timestamp, seenT = t, true
		case "v1":
			if len(val) != 2*sha256.Size {
				return StripeSignature{}, fmt.Errorf("v1 has %d hex digits, want %d: %w", len(val), 2*sha256.Size, ErrMalformed)
			}
			b, err := hex.DecodeString(val)
			if err != nil {
				return StripeSignature{}, fmt.Errorf("v1 is not hex: %w", ErrMalformed)
			}
			if len(sig.V1) == maxStripeSignatures {
				return StripeSignature{}, fmt.Errorf("more than %d v1 signatures: %w", maxStripeSignatures, ErrMalformed)
			}
			sig.V1 = append(sig.V1, b)
		}
	}
	if !seenT {
		return StripeSignature{}, fmt.Errorf("no t=: %w", ErrMalformed)
	}
	if len(sig.V1) == 0 {
		return StripeSignature{}, fmt.Errorf("no v1=: %w", ErrMalformed)
	}
	return sig, nil
}

// SignStripe returns a Stripe-Signature value for body at t, with one v1
// per secret. Tests and load tools use it.
func SignStripe(t time.Time, body []byte, secrets ...[]byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	out := "t=" + ts
	for _, secret := range secrets {
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(ts + "."))
		mac.Write(body)
		out += ",v1=" + hex.EncodeToString(mac.Sum(nil))
	}
	return out
}
