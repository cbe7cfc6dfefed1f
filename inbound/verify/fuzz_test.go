package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// The parsers take attacker-controlled headers: they must never panic,
// and what they accept must be well-formed.

func FuzzParseGitHubSignature(f *testing.F) {
	f.Add(SignGitHub([]byte("secret"), []byte("body")))
	f.Add("sha256=")
	f.Add("sha1=abc")
	f.Fuzz(func(t *testing.T, v string) {
		sig, err := ParseGitHubSignature(v)
		if err == nil && len(sig) != 32 {
			t.Fatalf("accepted %q as %d bytes", v, len(sig))
		}
	})
}

func FuzzParseStripeSignature(f *testing.F) {
	f.Add(SignStripe(time.Unix(1_700_000_000, 0), []byte("body"), []byte("a"), []byte("b")))
	f.Add("t=1,v1=,v0=x")
	f.Add(",,,=")
	f.Fuzz(func(t *testing.T, v string) {
		sig, err := ParseStripeSignature(v)
		if err != nil {
			return
		}
		if sig.Timestamp <= 0 || len(sig.V1) == 0 || len(sig.V1) > maxStripeSignatures {
			t.Fatalf("accepted %q as %+v", v, sig)
		}
		for _, s := range sig.V1 {
			if len(s) != 32 {
				t.Fatalf("accepted a v1 of %d bytes in %q", len(s), v)
			}
		}
	})
}

func FuzzParseStandardSignatures(f *testing.F) {
	f.Add(SignStandardV1(bytes.Repeat([]byte{1}, 32), "id", 1, []byte("b")) + " v1a,AAAA")
	f.Add("v1,")
	f.Add("   ")
	f.Fuzz(func(t *testing.T, v string) {
		sigs, err := ParseStandardSignatures(v)
		if err != nil {
			return
		}
		if len(sigs) == 0 || len(sigs) > maxStandardSignatures {
			t.Fatalf("accepted %q as %d signatures", v, len(sigs))
		}
		for _, s := range sigs {
			if s.Version == "" || len(s.Bytes) == 0 || strings.ContainsAny(s.Version, " \t") {
				t.Fatalf("accepted %q with entry %+v", v, s)
			}
		}
	})
}

func FuzzParseStandardTimestamp(f *testing.F) {
	f.Add("1700000000")
	f.Add("-1")
	f.Add(" 12 ")
	f.Fuzz(func(t *testing.T, v string) {
		ts, err := ParseStandardTimestamp(v)
		if err == nil && ts <= 0 {
			t.Fatalf("accepted %q as %d", v, ts)
		}
	})
}

func FuzzParseHMACSignature(f *testing.F) {
	sum := bytes.Repeat([]byte{7}, 32)
	f.Add("sha256="+hex.EncodeToString(sum), "sha256=", "hex")
	f.Add(base64.StdEncoding.EncodeToString(sum), "", "base64")
	f.Add(base64.RawURLEncoding.EncodeToString(sum), "", "base64")
	f.Fuzz(func(t *testing.T, v, prefix, encoding string) {
		sig, err := ParseHMACSignature(v, prefix, encoding, 32)
		if err == nil && len(sig) != 32 {
			t.Fatalf("accepted %q as %d bytes", v, len(sig))
		}
	})
}
