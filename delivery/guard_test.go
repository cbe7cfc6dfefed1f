package delivery

import (
	"errors"
	"net/netip"
	"testing"
)

func TestGuard(t *testing.T) {
	t.Parallel()
	cases := []struct {
		addr                   string
		strict, loopback, priv bool // allowed under each guard
	}{
		{"93.184.216.34", true, true, true},
		{"2606:2800:220:1:248:1893:25c8:1946", true, true, true},
		{"127.0.0.1", false, true, false},
		{"127.1.2.3", false, true, false},
		{"::1", false, true, false},
		{"::ffff:127.0.0.1", false, true, false},
		{"10.0.0.1", false, false, true},
		{"192.168.1.1", false, false, true},
		{"172.16.0.1", false, false, true},
		{"fd12::1", false, false, true},
		{"169.254.1.1", false, false, true},
		{"169.254.169.254", false, false, false},
		{"fd00:ec2::254", false, false, false},
		{"0.0.0.0", false, false, false},
		{"224.0.0.1", false, false, false},
	}
	guards := []struct {
		name string
		g    Guard
		want func(c int) bool
	}{
		{"strict", Guard{}, func(i int) bool { return cases[i].strict }},
		{"loopback", Guard{AllowLoopback: true}, func(i int) bool { return cases[i].loopback }},
		{"private", Guard{AllowPrivate: true}, func(i int) bool { return cases[i].priv }},
	}
	for _, g := range guards {
		for i, c := range cases {
			err := g.g.Check(netip.MustParseAddr(c.addr))
			if got := err == nil; got != g.want(i) {
				t.Errorf("%s guard, %s: allowed got %v, want %v (err %v)", g.name, c.addr, got, g.want(i), err)
			}
			if err != nil && !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("%s guard, %s: error %v does not wrap ErrForbiddenAddress", g.name, c.addr, err)
			}
		}
	}
}
