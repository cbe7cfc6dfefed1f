package verify

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"strings"
	"time"
)

// Algorithms and encodings of the generic HMAC verification.
const (
	AlgorithmSHA1   = "sha1"
	AlgorithmSHA256 = "sha256"
	AlgorithmSHA512 = "sha512"
	EncodingHex     = "hex"
	EncodingBase64  = "base64"
)

// HMAC verifies a header holding the HMAC of the body: Prefix, then the
// MAC in Encoding. Any of Secrets may match.
type HMAC struct {
	Secrets [][]byte
	// Header carrying the signature. Required.
	Header string
	// Algorithm: sha1, sha256 or sha512. Default sha256.
	Algorithm string
	// Encoding of the MAC: hex or base64. Default hex.
	Encoding string
	// Prefix before the MAC, e.g. "sha256="; may be empty.
	Prefix string
}

// Kind is "hmac".
func (HMAC) Kind() string { return KindHMAC }

// Verify checks the header against every secret.
func (m HMAC) Verify(h http.Header, body []byte, _ time.Time) error {
	v := h.Get(m.Header)
	if v == "" {
		return fmt.Errorf("%s: %w", m.Header, ErrMissing)
	}
	newHash, size, err := hashFor(m.Algorithm)
	if err != nil {
		return err
	}
	sig, err := ParseHMACSignature(v, m.Prefix, m.Encoding, size)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Header, err)
	}
	for _, secret := range m.Secrets {
		mac := hmac.New(newHash, secret)
		mac.Write(body)
		if hmac.Equal(mac.Sum(nil), sig) {
			return nil
		}
	}
	return fmt.Errorf("%s: %w", m.Header, ErrMismatch)
}

// hashFor returns the hash of an algorithm name and its size.
func hashFor(algorithm string) (func() hash.Hash, int, error) {
	switch strings.ToLower(algorithm) {
	case AlgorithmSHA1:
		return sha1.New, sha1.Size, nil
	case AlgorithmSHA256, "":
		return sha256.New, sha256.Size, nil
	case AlgorithmSHA512:
		return sha512.New, sha512.Size, nil
	}
	return nil, 0, fmt.Errorf("algorithm %q: want sha1, sha256 or sha512", algorithm)
}

// ParseHMACSignature strips prefix from v and decodes the rest (hex or
// base64, standard or URL alphabet, padded or not) into size bytes.
func ParseHMACSignature(v, prefix, encoding string, size int) ([]byte, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), prefix)
	if !ok {
		return nil, fmt.Errorf("want the prefix %q: %w", prefix, ErrMalformed)
	}
	var sig []byte
	var err error
	switch strings.ToLower(encoding) {
	case EncodingHex, "":
		sig, err = hex.DecodeString(rest)
	case EncodingBase64:
		sig, err = decodeBase64(rest)
	default:
		return nil, fmt.Errorf("encoding %q: want hex or base64", encoding)
	}
	if err != nil {
		return nil, fmt.Errorf("not %s: %w", encoding, ErrMalformed)
	}
	if len(sig) != size {
		return nil, fmt.Errorf("%d bytes, want %d: %w", len(sig), size, ErrMalformed)
	}
	return sig, nil
}

// decodeBase64 accepts the standard and URL alphabets, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// SignHMAC returns a header value for body. Tests and load tools use it.
func SignHMAC(algorithm, encoding, prefix string, secret, body []byte) (string, error) {
	newHash, _, err := hashFor(algorithm)
	if err != nil {
		return "", err
	}
	mac := hmac.New(newHash, secret)
	mac.Write(body)
	sum := mac.Sum(nil)
	if strings.ToLower(encoding) == EncodingBase64 {
		return prefix + base64.StdEncoding.EncodeToString(sum), nil
	}
	return prefix + hex.EncodeToString(sum), nil
}
