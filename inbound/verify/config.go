package verify

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"regexp"
	"strings"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Bounds of secrets and tokens.
const (
	MinSecretBytes = 8
	MaxSecretBytes = 4096
	// MaxPreviousSecrets bounds the secrets kept while rotating.
	MaxPreviousSecrets = 4
)

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")

// New builds the Verifier a source's settings describe. field names the
// settings in errors ("verification"); every problem is reported, each a
// *FieldError.
func New(v *sluicev1.Verification, field string) (Verifier, error) {
	if v == nil || v.Kind == nil {
		return nil, &FieldError{field, "required: one of github, stripe, standardWebhooks, hmac, token, none"}
	}
	switch k := v.Kind.(type) {
	case *sluicev1.Verification_Github:
		f := field + ".github"
		secrets, err := rawSecrets(f, k.Github.GetSecret(), k.Github.GetPreviousSecrets())
		return GitHub{Secrets: secrets}, err
	case *sluicev1.Verification_Stripe:
		f := field + ".stripe"
		secrets, err := rawSecrets(f, k.Stripe.GetSecret(), k.Stripe.GetPreviousSecrets())
		if k.Stripe.GetSecret() != "" && !strings.HasPrefix(k.Stripe.GetSecret(), SecretPrefix) {
			err = errors.Join(err, &FieldError{f + ".secret", "a Stripe signing secret starts with " + SecretPrefix})
		}
		return Stripe{Secrets: secrets}, err
	case *sluicev1.Verification_StandardWebhooks:
		return standardFrom(k.StandardWebhooks, field+".standardWebhooks")
	case *sluicev1.Verification_Hmac:
		return hmacFrom(k.Hmac, field+".hmac")
	case *sluicev1.Verification_Token:
		f := field + ".token"
		var errs []error
		if !headerName.MatchString(k.Token.GetHeader()) {
			errs = append(errs, &FieldError{f + ".header", fmt.Sprintf("%q is not a header name", k.Token.GetHeader())})
		}
		if err := checkSecret(f+".value", k.Token.GetValue()); err != nil {
			errs = append(errs, err)
		}
		return Token{Header: k.Token.GetHeader(), Value: []byte(k.Token.GetValue())}, errors.Join(errs...)
	case *sluicev1.Verification_None:
		return None{}, nil
	}
	return nil, &FieldError{field, "unknown verification kind"}
}

func standardFrom(s *sluicev1.StandardWebhooksVerification, f string) (Verifier, error) {
	var errs []error
	var v StandardWebhooks
	if s.GetSecret() == "" && s.GetPublicKey() == "" {
		errs = append(errs, &FieldError{f + ".secret", "required (or publicKey)"})
	}
	if len(s.GetPreviousSecrets()) > MaxPreviousSecrets {
		errs = append(errs, &FieldError{f + ".previousSecrets", fmt.Sprintf("%d secrets, at most %d", len(s.GetPreviousSecrets()), MaxPreviousSecrets)})
	}
	add := func(name, secret string) {
		key, err := ParseSecret(secret)
		if err != nil {
			errs = append(errs, &FieldError{name, err.Error()})
			return
		}
		v.Secrets = append(v.Secrets, key)
	}
	if s.GetSecret() != "" {
		add(f+".secret", s.GetSecret())
	}
	for i, p := range s.GetPreviousSecrets() {
		add(fmt.Sprintf("%s.previousSecrets[%d]", f, i), p)
	}
	if s.GetPublicKey() != "" {
		pk, err := ParsePublicKey(s.GetPublicKey())
		if err != nil {
			errs = append(errs, &FieldError{f + ".publicKey", err.Error()})
		} else {
			v.PublicKeys = []ed25519.PublicKey{pk}
		}
	}
	return v, errors.Join(errs...)
}

func hmacFrom(h *sluicev1.HMACVerification, f string) (Verifier, error) {
	secrets, err := rawSecrets(f, h.GetSecret(), h.GetPreviousSecrets())
	errs := []error{err}
	if !headerName.MatchString(h.GetHeader()) {
		errs = append(errs, &FieldError{f + ".header", fmt.Sprintf("%q is not a header name", h.GetHeader())})
	}
	if _, _, err := hashFor(h.GetAlgorithm()); err != nil {
		errs = append(errs, &FieldError{f + ".algorithm", err.Error()})
	}
	switch strings.ToLower(h.GetEncoding()) {
	case "", EncodingHex, EncodingBase64:
	default:
		errs = append(errs, &FieldError{f + ".encoding", fmt.Sprintf("%q: want hex or base64", h.GetEncoding())})
	}
	if len(h.GetPrefix()) > 64 {
		errs = append(errs, &FieldError{f + ".prefix", "longer than 64 bytes"})
	}
	return HMAC{
		Secrets: secrets, Header: h.GetHeader(),
		Algorithm: strings.ToLower(h.GetAlgorithm()), Encoding: strings.ToLower(h.GetEncoding()), Prefix: h.GetPrefix(),
	}, errors.Join(errs...)
}

// rawSecrets checks a secret and those being rotated out, used as bytes.
func rawSecrets(f, secret string, previous []string) ([][]byte, error) {
	var errs []error
	if err := checkSecret(f+".secret", secret); err != nil {
		errs = append(errs, err)
	}
	if len(previous) > MaxPreviousSecrets {
		errs = append(errs, &FieldError{f + ".previousSecrets", fmt.Sprintf("%d secrets, at most %d", len(previous), MaxPreviousSecrets)})
	}
	secrets := [][]byte{[]byte(secret)}
	for i, p := range previous {
		if err := checkSecret(fmt.Sprintf("%s.previousSecrets[%d]", f, i), p); err != nil {
			errs = append(errs, err)
		}
		secrets = append(secrets, []byte(p))
	}
	return secrets, errors.Join(errs...)
}

func checkSecret(field, s string) error {
	switch {
	case s == "":
		return &FieldError{field, "required"}
	case len(s) < MinSecretBytes || len(s) > MaxSecretBytes:
		return &FieldError{field, fmt.Sprintf("%d bytes, want %d to %d", len(s), MinSecretBytes, MaxSecretBytes)}
	case strings.TrimSpace(s) != s:
		return &FieldError{field, "has leading or trailing white space"}
	}
	return nil
}
