package verify

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks header names.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// StandardTolerance is how far a Standard Webhooks timestamp may be from
// now.
const StandardTolerance = 5 * time.Minute

// Standard Webhooks key prefixes.
const (
	SecretPrefix    = "whsec_"
	PublicKeyPrefix = "whpk_"
)

// StandardWebhooks verifies a request signed per Standard Webhooks: the
// signed content is id "." timestamp "." body; webhook-signature lists
// space-separated "v1,<base64 HMAC-SHA256>" and "v1a,<base64 Ed25519>"
// signatures, and one valid signature under any key is enough (senders
// list several while rotating).
type StandardWebhooks struct {
	// Keys for v1 signatures (decoded from "whsec_...").
	Secrets [][]byte
	// Keys for v1a signatures (decoded from "whpk_...").
	PublicKeys []ed25519.PublicKey
	// Tolerance of the timestamp either way. Default StandardTolerance.
	Tolerance time.Duration
}

// Kind is "standardWebhooks".
func (StandardWebhooks) Kind() string { return KindStandardWebhooks }

// Verify checks the three headers, the timestamp, then the signatures.
func (s StandardWebhooks) Verify(h http.Header, body []byte, now time.Time) error {
	id, tsText, sigText := h.Get(HeaderWebhookID), h.Get(HeaderWebhookTimestamp), h.Get(HeaderWebhookSignature)
	for name, v := range map[string]string{HeaderWebhookID: id, HeaderWebhookTimestamp: tsText, HeaderWebhookSignature: sigText} {
		if v == "" {
			return fmt.Errorf("%s: %w", name, ErrMissing)
		}
	}
	ts, err := ParseStandardTimestamp(tsText)
	if err != nil {
		return fmt.Errorf("%s: %w", HeaderWebhookTimestamp, err)
	}
	sigs, err := ParseStandardSignatures(sigText)
	if err != nil {
		return fmt.Errorf("%s: %w", HeaderWebhookSignature, err)
	}
	tolerance := s.Tolerance
	if tolerance == 0 {
		tolerance = StandardTolerance
	}
	if !within(time.Unix(ts, 0), now, tolerance) {
		return fmt.Errorf("%s: %d: %w", HeaderWebhookTimestamp, ts, ErrTimestamp)
	}
	signed := standardContent(id, ts, body)
	matched := false
	for _, sig := range sigs {
		switch sig.Version {
		case "v1":
			for _, secret := range s.Secrets {
				mac := hmac.New(sha256.New, secret)
				mac.Write(signed)
				matched = hmac.Equal(mac.Sum(nil), sig.Bytes) || matched
			}
		case "v1a":
			for _, pk := range s.PublicKeys {
				matched = (len(sig.Bytes) == ed25519.SignatureSize && ed25519.Verify(pk, signed, sig.Bytes)) || matched
			}
		}
	}
	if !matched {
		return fmt.Errorf("%s: %w", HeaderWebhookSignature, ErrMismatch)
	}
	return nil
}

func standardContent(id string, ts int64, body []byte) []byte {
	b := make([]byte, 0, len(id)+len(body)+24)
	b = append(b, id...)
	b = append(b, '.')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '.')
	return append(b, body...)
}

// StandardSignature is one entry of webhook-signature.
type StandardSignature struct {
	// Version is "v1", "v1a" or another scheme (ignored by Verify).
	Version string
	Bytes   []byte
}

// maxStandardSignatures bounds the entries one header may carry.
const maxStandardSignatures = 16

// ParseStandardSignatures parses a space-separated list of
// "<version>,<base64>" entries.
func ParseStandardSignatures(v string) ([]StandardSignature, error) {
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return nil, fmt.Errorf("no signatures: %w", ErrMalformed)
	}
	if len(fields) > maxStandardSignatures {
		return nil, fmt.Errorf("%d signatures, at most %d: %w", len(fields), maxStandardSignatures, ErrMalformed)
	}
	sigs := make([]StandardSignature, 0, len(fields))
	for _, f := range fields {
		version, b64, ok := strings.Cut(f, ",")
		if !ok || version == "" {
			return nil, fmt.Errorf("entry %q is not <version>,<base64>: %w", f, ErrMalformed)
		}
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("entry %q: signature is not base64: %w", f, ErrMalformed)
		}
		sigs = append(sigs, StandardSignature{Version: version, Bytes: b})
	}
	return sigs, nil
}

// ParseStandardTimestamp parses webhook-timestamp: unix seconds.
func ParseStandardTimestamp(v string) (int64, error) {
	ts, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || ts <= 0 {
		return 0, fmt.Errorf("%q is not unix seconds: %w", v, ErrMalformed)
	}
	return ts, nil
}

// ParseSecret decodes a "whsec_<base64>" secret.
func ParseSecret(s string) ([]byte, error) {
	raw, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("want the %s prefix", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("not base64 after %s", SecretPrefix)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("%d bytes of key, want 24 to 64", len(key))
	}
	return key, nil
}

// ParsePublicKey decodes a "whpk_<base64>" Ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	raw, ok := strings.CutPrefix(s, PublicKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("want the %s prefix", PublicKeyPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("not base64 after %s", PublicKeyPrefix)
	}
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%d bytes of key, want %d", len(key), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(key), nil
}

// SignStandardV1 returns a "v1,<base64>" signature. Tests and load tools
// use it.
func SignStandardV1(secret []byte, id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(standardContent(id, ts, body))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// SignStandardV1a returns a "v1a,<base64>" Ed25519 signature.
func SignStandardV1a(key ed25519.PrivateKey, id string, ts int64, body []byte) string {
	return "v1a," + base64.StdEncoding.EncodeToString(ed25519.Sign(key, standardContent(id, ts, body)))
}
