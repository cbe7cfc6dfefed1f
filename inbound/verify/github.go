package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// GitHub header names.
const (
	HeaderGitHubSignature = "X-Hub-Signature-256"
	HeaderGitHubEvent     = "X-GitHub-Event"
	HeaderGitHubDelivery  = "X-GitHub-Delivery"
)

// GitHub verifies X-Hub-Signature-256: "sha256=" and the hex
// HMAC-SHA256 of the body under the webhook's secret. Any of Secrets may
// match (the current one and those being rotated out).
type GitHub struct {
	Secrets [][]byte
}

// Kind is "github".
func (GitHub) Kind() string { return KindGitHub }

// Verify checks the request's signature against every secret.
func (g GitHub) Verify(h http.Header, body []byte, _ time.Time) error {
	v := h.Get(HeaderGitHubSignature)
	if v == "" {
		return fmt.Errorf("%s: %w", HeaderGitHubSignature, ErrMissing)
	}
	sig, err := ParseGitHubSignature(v)
	if err != nil {
		return fmt.Errorf("%s: %w", HeaderGitHubSignature, err)
	}
	for _, secret := range g.Secrets {
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		if hmac.Equal(mac.Sum(nil), sig) {
			return nil
		}
	}
	return fmt.Errorf("%s: %w", HeaderGitHubSignature, ErrMismatch)
}

// ParseGitHubSignature decodes "sha256=<64 hex digits>".
func ParseGitHubSignature(v string) ([]byte, error) {
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(v), "sha256=")
	if !ok {
		return nil, fmt.Errorf("want sha256=<hex>: %w", ErrMalformed)
	}
	if len(hexSig) != 2*sha256.Size {
		return nil, fmt.Errorf("%d hex digits, want %d: %w", len(hexSig), 2*sha256.Size, ErrMalformed)
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil {
		return nil, fmt.Errorf("not hex: %w", ErrMalformed)
	}
	return sig, nil
}

// SignGitHub returns the X-Hub-Signature-256 value for body, as GitHub
// sends it. Tests and load tools use it.
func SignGitHub(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
