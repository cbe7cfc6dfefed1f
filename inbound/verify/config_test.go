package verify

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestNewBuildsEveryKind(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	whsec := SecretPrefix + base64.StdEncoding.EncodeToString(key)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	whpk := PublicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
	ts := now.Unix()
	gh, _ := SignHMAC("sha512", "base64", "", []byte("hmac-secret"), body)
	cases := []struct {
		name string
		cfg  *sluicev1.Verification
		h    http.Header
	}{
		{"github", &sluicev1.Verification{Kind: &sluicev1.Verification_Github{Github: &sluicev1.GitHubVerification{Secret: "gh-secret"}}},
			hdr(HeaderGitHubSignature, SignGitHub([]byte("gh-secret"), body))},
		{"stripe", &sluicev1.Verification{Kind: &sluicev1.Verification_Stripe{Stripe: &sluicev1.StripeVerification{Secret: "whsec_abcdefgh"}}},
			hdr(HeaderStripeSignature, SignStripe(now, body, []byte("whsec_abcdefgh")))},
		{"standard v1", &sluicev1.Verification{Kind: &sluicev1.Verification_StandardWebhooks{StandardWebhooks: &sluicev1.StandardWebhooksVerification{Secret: whsec}}},
			hdr(HeaderWebhookID, "m1", HeaderWebhookTimestamp, strconv.FormatInt(ts, 10), HeaderWebhookSignature, SignStandardV1(key, "m1", ts, body))},
		{"standard v1a", &sluicev1.Verification{Kind: &sluicev1.Verification_StandardWebhooks{StandardWebhooks: &sluicev1.StandardWebhooksVerification{PublicKey: whpk}}},
			hdr(HeaderWebhookID, "m1", HeaderWebhookTimestamp, strconv.FormatInt(ts, 10), HeaderWebhookSignature, SignStandardV1a(priv, "m1", ts, body))},
		{"hmac", &sluicev1.Verification{Kind: &sluicev1.Verification_Hmac{Hmac: &sluicev1.HMACVerification{Secret: "hmac-secret", Header: "X-Sig", Algorithm: "SHA512", Encoding: "base64"}}},
			hdr("X-Sig", gh)},
		{"token", &sluicev1.Verification{Kind: &sluicev1.Verification_Token{Token: &sluicev1.TokenVerification{Header: "X-Token", Value: "t0ken-value"}}},
			hdr("X-Token", "t0ken-value")},
		{"none", &sluicev1.Verification{Kind: &sluicev1.Verification_None{None: &sluicev1.NoVerification{}}}, hdr()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			v, err := New(c.cfg, "verification")
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := v.Verify(c.h, body, now); err != nil {
				t.Fatalf("Verify: got %v, want accepted", err)
			}
			if err := v.Verify(c.h, []byte("forged"), now); err == nil && c.name != "none" && c.name != "token" {
				t.Fatal("Verify of another body: accepted, want refused")
			}
		})
	}
}

func TestNewNamesBadFields(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		cfg    *sluicev1.Verification
		fields []string
	}{
		{"unset", nil, []string{"verification"}},
		{"github without secret", &sluicev1.Verification{Kind: &sluicev1.Verification_Github{Github: &sluicev1.GitHubVerification{}}}, []string{"verification.github.secret"}},
		{"short previous secret", &sluicev1.Verification{Kind: &sluicev1.Verification_Github{Github: &sluicev1.GitHubVerification{Secret: "long enough", PreviousSecrets: []string{"x"}}}}, []string{"verification.github.previousSecrets[0]"}},
		{"stripe secret without whsec_", &sluicev1.Verification{Kind: &sluicev1.Verification_Stripe{Stripe: &sluicev1.StripeVerification{Secret: "sk_live_12345"}}}, []string{"verification.stripe.secret"}},
		{"standard bad secret and key", &sluicev1.Verification{Kind: &sluicev1.Verification_StandardWebhooks{StandardWebhooks: &sluicev1.StandardWebhooksVerification{Secret: "whsec_!!", PublicKey: "whpk_AAAA"}}},
			[]string{"verification.standardWebhooks.secret", "verification.standardWebhooks.publicKey"}},
		{"standard nothing", &sluicev1.Verification{Kind: &sluicev1.Verification_StandardWebhooks{StandardWebhooks: &sluicev1.StandardWebhooksVerification{}}}, []string{"verification.standardWebhooks.secret"}},
		{"hmac everything wrong", &sluicev1.Verification{Kind: &sluicev1.Verification_Hmac{Hmac: &sluicev1.HMACVerification{Header: "bad header", Algorithm: "md5", Encoding: "base32"}}},
			[]string{"verification.hmac.secret", "verification.hmac.header", "verification.hmac.algorithm", "verification.hmac.encoding"}},
		{"token without value", &sluicev1.Verification{Kind: &sluicev1.Verification_Token{Token: &sluicev1.TokenVerification{Header: "X-Token"}}}, []string{"verification.token.value"}},
		{"secret with spaces", &sluicev1.Verification{Kind: &sluicev1.Verification_Github{Github: &sluicev1.GitHubVerification{Secret: " padded secret "}}}, []string{"verification.github.secret"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(c.cfg, "verification")
			if err == nil {
				t.Fatal("got nil error, want field errors")
			}
			for _, f := range c.fields {
				if !strings.Contains(err.Error(), f+": ") {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %v holds no *FieldError", err)
			}
		})
	}
}
