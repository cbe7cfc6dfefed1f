package verify

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

var (
	now  = time.Unix(1_750_000_000, 0)
	body = []byte(`{"id":"evt_1","type":"push","n":1}`)
)

type verifyCase struct {
	name   string
	v      Verifier
	header http.Header
	body   []byte
	want   error // nil: accepted
}

func hdr(kv ...string) http.Header {
	h := make(http.Header)
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func runCases(t *testing.T, cases []verifyCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := c.body
			if b == nil {
				b = body
			}
			err := c.v.Verify(c.header, b, now)
			switch {
			case c.want == nil && err != nil:
				t.Fatalf("got %v, want accepted", err)
			case c.want != nil && !errors.Is(err, c.want):
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestGitHub(t *testing.T) {
	t.Parallel()
	secret, old := []byte("It's a Secret to Everybody"), []byte("the old secret")
	v := GitHub{Secrets: [][]byte{secret}}
	rotating := GitHub{Secrets: [][]byte{secret, old}}
	runCases(t, []verifyCase{
		{name: "valid", v: v, header: hdr(HeaderGitHubSignature, SignGitHub(secret, body))},
		{name: "GitHub's documented example", v: v, body: []byte("Hello, World!"),
			header: hdr(HeaderGitHubSignature, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")},
		{name: "wrong secret", v: v, header: hdr(HeaderGitHubSignature, SignGitHub([]byte("wrong secret!"), body)), want: ErrMismatch},
		{name: "body changed", v: v, header: hdr(HeaderGitHubSignature, SignGitHub(secret, body)), body: []byte(`{}`), want: ErrMismatch},
		{name: "missing", v: v, header: hdr(), want: ErrMissing},
		{name: "sha1 prefix", v: v, header: hdr(HeaderGitHubSignature, "sha1=0123"), want: ErrMalformed},
		{name: "not hex", v: v, header: hdr(HeaderGitHubSignature, "sha256="+string(make([]byte, 64))), want: ErrMalformed},
		{name: "short", v: v, header: hdr(HeaderGitHubSignature, "sha256=abcd"), want: ErrMalformed},
		{name: "rotation: old secret accepted", v: rotating, header: hdr(HeaderGitHubSignature, SignGitHub(old, body))},
		{name: "rotation: new secret accepted", v: rotating, header: hdr(HeaderGitHubSignature, SignGitHub(secret, body))},
		{name: "rotation over: old secret refused", v: v, header: hdr(HeaderGitHubSignature, SignGitHub(old, body)), want: ErrMismatch},
	})
}

func TestStripe(t *testing.T) {
	t.Parallel()
	secret, other := []byte("whsec_stripe_test_secret"), []byte("whsec_rolled_secret")
	v := Stripe{Secrets: [][]byte{secret}}
	runCases(t, []verifyCase{
		{name: "valid", v: v, header: hdr(HeaderStripeSignature, SignStripe(now, body, secret))},
		{name: "valid at the edge of tolerance", v: v, header: hdr(HeaderStripeSignature, SignStripe(now.Add(-300*time.Second), body, secret))},
		{name: "stale", v: v, header: hdr(HeaderStripeSignature, SignStripe(now.Add(-301*time.Second), body, secret)), want: ErrTimestamp},
		{name: "future", v: v, header: hdr(HeaderStripeSignature, SignStripe(now.Add(301*time.Second), body, secret)), want: ErrTimestamp},
		{name: "wrong secret", v: v, header: hdr(HeaderStripeSignature, SignStripe(now, body, other)), want: ErrMismatch},
		{name: "several v1, one valid (Stripe rolling its secret)", v: v, header: hdr(HeaderStripeSignature, SignStripe(now, body, other, secret))},
		{name: "v0 ignored", v: v, header: hdr(HeaderStripeSignature, SignStripe(now, body, secret)+",v0=abc")},
		{name: "only v0", v: v, header: hdr(HeaderStripeSignature, "t="+strconv.FormatInt(now.Unix(), 10)+",v0=abc"), want: ErrMalformed},
		{name: "no t", v: v, header: hdr(HeaderStripeSignature, "v1="+SignStripe(now, body, secret)[len("t=1750000000,v1="):]), want: ErrMalformed},
		{name: "bad t", v: v, header: hdr(HeaderStripeSignature, "t=abc,v1=00"), want: ErrMalformed},
		{name: "garbage", v: v, header: hdr(HeaderStripeSignature, "nonsense"), want: ErrMalformed},
		{name: "missing", v: v, header: hdr(), want: ErrMissing},
		{name: "timestamp tampered", v: v, header: hdr(HeaderStripeSignature, "t="+strconv.FormatInt(now.Unix()+1, 10)+SignStripe(now, body, secret)[len("t=1750000000"):]), want: ErrMismatch},
		{name: "rotation: previous secret accepted", v: Stripe{Secrets: [][]byte{other, secret}}, header: hdr(HeaderStripeSignature, SignStripe(now, body, secret))},
	})
}

func TestStandardWebhooks(t *testing.T) {
	t.Parallel()
	key, old := make([]byte, 32), make([]byte, 32)
	_, _ = rand.Read(key)
	_, _ = rand.Read(old)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	v := StandardWebhooks{Secrets: [][]byte{key}, PublicKeys: []ed25519.PublicKey{pub}}
	id, ts := "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now.Unix()
	h := func(ts int64, sig string) http.Header {
		return hdr(HeaderWebhookID, id, HeaderWebhookTimestamp, strconv.FormatInt(ts, 10), HeaderWebhookSignature, sig)
	}
	runCases(t, []verifyCase{
		{name: "v1 valid", v: v, header: h(ts, SignStandardV1(key, id, ts, body))},
		{name: "v1a valid", v: v, header: h(ts, SignStandardV1a(priv, id, ts, body))},
		{name: "v1 wrong secret", v: v, header: h(ts, SignStandardV1(old, id, ts, body)), want: ErrMismatch},
		{name: "v1a wrong key", v: v, header: h(ts, SignStandardV1a(otherPriv, id, ts, body)), want: ErrMismatch},
		{name: "id tampered", v: v, header: hdr(HeaderWebhookID, "msg_other", HeaderWebhookTimestamp, strconv.FormatInt(ts, 10), HeaderWebhookSignature, SignStandardV1(key, id, ts, body)), want: ErrMismatch},
		{name: "stale", v: v, header: h(ts-301, SignStandardV1(key, id, ts-301, body)), want: ErrTimestamp},
		{name: "future", v: v, header: h(ts+301, SignStandardV1(key, id, ts+301, body)), want: ErrTimestamp},
		{name: "edge of tolerance", v: v, header: h(ts-300, SignStandardV1(key, id, ts-300, body))},
		{name: "rotation: sender lists old and new", v: v, header: h(ts, SignStandardV1(old, id, ts, body)+" "+SignStandardV1(key, id, ts, body))},
		{name: "rotation: receiver keeps the previous secret", v: StandardWebhooks{Secrets: [][]byte{key, old}}, header: h(ts, SignStandardV1(old, id, ts, body))},
		{name: "unknown version only", v: v, header: h(ts, "v2,"+base64.StdEncoding.EncodeToString(key)), want: ErrMismatch},
		{name: "v1a signature of the wrong length", v: v, header: h(ts, "v1a,"+base64.StdEncoding.EncodeToString(key)), want: ErrMismatch},
		{name: "malformed signature", v: v, header: h(ts, "v1:abc"), want: ErrMalformed},
		{name: "not base64", v: v, header: h(ts, "v1,!!!"), want: ErrMalformed},
		{name: "malformed timestamp", v: v, header: hdr(HeaderWebhookID, id, HeaderWebhookTimestamp, "soon", HeaderWebhookSignature, SignStandardV1(key, id, ts, body)), want: ErrMalformed},
		{name: "missing id", v: v, header: hdr(HeaderWebhookTimestamp, "1", HeaderWebhookSignature, "v1,AA=="), want: ErrMissing},
	})
}

func TestHMAC(t *testing.T) {
	t.Parallel()
	secret, old := []byte("shopify-shared-secret"), []byte("previous-shared-secret")
	sign := func(alg, enc, prefix string, s []byte) string {
		v, err := SignHMAC(alg, enc, prefix, s, body)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []verifyCase{}
	for _, alg := range []string{AlgorithmSHA1, AlgorithmSHA256, AlgorithmSHA512} {
		for _, enc := range []string{EncodingHex, EncodingBase64} {
			v := HMAC{Secrets: [][]byte{secret}, Header: "X-Signature", Algorithm: alg, Encoding: enc, Prefix: alg + "="}
			cases = append(cases,
				verifyCase{name: alg + "/" + enc + " valid", v: v, header: hdr("X-Signature", sign(alg, enc, alg+"=", secret))},
				verifyCase{name: alg + "/" + enc + " wrong secret", v: v, header: hdr("X-Signature", sign(alg, enc, alg+"=", old)), want: ErrMismatch},
				verifyCase{name: alg + "/" + enc + " missing prefix", v: v, header: hdr("X-Signature", sign(alg, enc, "", secret)), want: ErrMalformed},
			)
		}
	}
	v := HMAC{Secrets: [][]byte{secret}, Header: "X-Shopify-Hmac-Sha256", Encoding: EncodingBase64}
	cases = append(cases,
		verifyCase{name: "defaults to sha256", v: HMAC{Secrets: [][]byte{secret}, Header: "X-Sig"}, header: hdr("X-Sig", sign("", "", "", secret))},
		verifyCase{name: "wrong algorithm's length", v: v, header: hdr("X-Shopify-Hmac-Sha256", sign(AlgorithmSHA1, EncodingBase64, "", secret)), want: ErrMalformed},
		verifyCase{name: "not base64", v: v, header: hdr("X-Shopify-Hmac-Sha256", "***"), want: ErrMalformed},
		verifyCase{name: "missing", v: v, header: hdr("X-Other", "x"), want: ErrMissing},
		verifyCase{name: "rotation: previous secret accepted", v: HMAC{Secrets: [][]byte{secret, old}, Header: "X-Sig"}, header: hdr("X-Sig", sign("", "", "", old))},
	)
	runCases(t, cases)
}

func TestToken(t *testing.T) {
	t.Parallel()
	v := Token{Header: "Authorization", Value: []byte("Bearer s3cret-token")}
	runCases(t, []verifyCase{
		{name: "valid", v: v, header: hdr("Authorization", "Bearer s3cret-token")},
		{name: "wrong", v: v, header: hdr("Authorization", "Bearer s3cret-tokeN"), want: ErrMismatch},
		{name: "prefix of the token", v: v, header: hdr("Authorization", "Bearer s3cret"), want: ErrMismatch},
		{name: "missing", v: v, header: hdr(), want: ErrMissing},
		{name: "sent twice", v: v, header: hdr("Authorization", "Bearer s3cret-token", "Authorization", "x"), want: ErrMalformed},
	})
}

func TestNone(t *testing.T) {
	t.Parallel()
	if err := (None{}).Verify(hdr(), body, now); err != nil {
		t.Fatalf("got %v, want accepted", err)
	}
}
