package tenancy

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// KeyPrefix starts every API key Sluice generates.
const KeyPrefix = "sk_"

// SecretPrefix starts signing secrets, as in Standard Webhooks.
const SecretPrefix = "whsec_"

// NewKey returns a new random API key.
func NewKey() string {
	return KeyPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(random(20)))
}

// NewSigningSecret returns a new Standard Webhooks secret: "whsec_" and
// the base64 of 32 random bytes.
func NewSigningSecret() string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(random(32))
}

// HashKey is what the config topic stores of a key.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// KeyID is the public id of a key: safe to log and show in audit trails.
func KeyID(key string) string {
	return "key_" + HashKey(key)[:12]
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return b
}
