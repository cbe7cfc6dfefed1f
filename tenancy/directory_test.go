package tenancy_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/tenancy"
)

func TestDirectory(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		newDir := func() *tenancy.Directory {
			d, err := tenancy.NewDirectory(tenancy.Config{Brokers: c.Brokers, Topic: c.Topics.Config()})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Stop(ctx) })
			return d
		}
		d := newDir()
		key := tenancy.NewKey()
		if _, err := d.Authenticate(key); !errors.Is(err, tenancy.ErrUnknownKey) {
			t.Fatalf("unknown key: got %v, want ErrUnknownKey", err)
		}
		p, err := d.Bootstrap(ctx, "acme", key, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		again, err := d.Bootstrap(ctx, "acme", key, time.Now())
		if err != nil || again != p {
			t.Fatalf("second bootstrap: got %v %v, want %v", again, err, p)
		}
		// A second node folds the same topic and agrees.
		other := newDir()
		got, err := other.Authenticate(key)
		if err != nil || got != p {
			t.Fatalf("other node: got %v %v, want %v", got, err, p)
		}
		ten, err := other.Tenant(p.TenantID)
		if err != nil {
			t.Fatal(err)
		}
		if len(ten.SigningSecret) < len(tenancy.SecretPrefix)+40 {
			t.Errorf("signing secret %q looks too short", ten.SigningSecret)
		}
		if _, err := other.Authenticate(key + "x"); !errors.Is(err, tenancy.ErrUnknownKey) {
			t.Errorf("wrong key: got %v, want ErrUnknownKey", err)
		}
	})
}
