package delivery

import "testing"

// The example from the Standard Webhooks specification.
func TestSignerStandardWebhooksVector(t *testing.T) {
	t.Parallel()
	s, err := NewSigner("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"test": 2432232314}`)
	got := s.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
	want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	if got != want {
		t.Fatalf("signature: got %s, want %s", got, want)
	}
	if !s.Verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, "v1,bogus "+want) {
		t.Error("Verify rejected a header holding the right signature among others")
	}
	if s.Verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, want) {
		t.Error("Verify accepted a signature for another timestamp")
	}
}

func TestNewSignerRejectsBadSecrets(t *testing.T) {
	t.Parallel()
	for _, secret := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!", "whsec_c2hvcnQ="} {
		if _, err := NewSigner(secret); err == nil {
			t.Errorf("NewSigner(%q): got nil error, want one", secret)
		}
	}
}
