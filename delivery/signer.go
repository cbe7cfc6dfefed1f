package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Standard Webhooks header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Signer signs payloads per Standard Webhooks: v1 is the base64 of
// HMAC-SHA256(key, id "." timestamp "." body), key being the secret's
// base64-decoded part after "whsec_".
type Signer struct {
	key []byte
}

// NewSigner parses a "whsec_<base64>" secret.
func NewSigner(secret string) (*Signer, error) {
	raw, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, fmt.Errorf("signing secret: want the whsec_ prefix")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("signing secret: %w", err)
	}
	if len(key) < 24 {
		return nil, fmt.Errorf("signing secret: %d bytes of key, want at least 24", len(key))
	}
	return &Signer{key: key}, nil
}

// Sign returns the webhook-signature header value for one delivery.
func (s *Signer) Sign(id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verify reports whether header carries a valid v1 signature of the
// delivery, comparing in constant time. Receivers and tests use it.
func (s *Signer) Verify(id string, timestamp int64, body []byte, header string) bool {
	want := s.Sign(id, timestamp, body)
	for _, sig := range strings.Fields(header) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}
