package delivery

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
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
		{"ff02::1", false, false, false},
		{"::", false, false, false},
		{"0.1.2.3", false, false, false},
		{"255.255.255.255", false, false, false},
		{"fe80::1", false, false, true},
		{"fe80::1%eth0", false, false, true},
		{"::ffff:10.0.0.1", false, false, true},
		{"::ffff:169.254.169.254", false, false, false},
		{"100.64.0.1", false, false, true},
		{"100.127.255.254", false, false, true},
		{"100.128.0.1", true, true, true},
		{"64:ff9b::7f00:1", false, true, false},    // NAT64 of 127.0.0.1
		{"64:ff9b::a00:1", false, false, true},     // NAT64 of 10.0.0.1
		{"2002:a9fe:a9fe::1", false, false, false}, // 6to4 of 169.254.169.254
		{"::127.0.0.1", false, true, false},        // IPv4-compatible
		{"fec0::1", false, false, true},
		{"169.254.170.2", false, false, false},                        // ECS task credentials
		{"169.254.170.23", false, false, false},                       // EKS Pod Identity
		{"fd00:ec2::23", false, false, false},                         // EKS Pod Identity, IPv6
		{"::ffff:169.254.170.23", false, false, false},                // mapped
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", false, true, false},  // Teredo of 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", false, false, true},  // Teredo of 10.0.0.1
		{"2001:0:4136:e378:8000:63bf:5601:5601", false, false, false}, // Teredo of 169.254.169.254
		{"2001:0:4136:e378:8000:63bf:a247:27dd", true, true, true},    // Teredo of 93.184.216.34
		{"2001:db8::1", true, true, true},                             // not Teredo
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

// TestPosterRefusesAtConnectTime dials through the real poster: names and
// literals that resolve to refused addresses never get a connection.
func TestPosterRefusesAtConnectTime(t *testing.T) {
	t.Parallel()
	srv, n := target(t, 204, nil)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p := NewPoster(Guard{}, 4096, time.Now)
	t.Cleanup(p.Close)
	signer, err := NewSigner(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "10.0.0.1", "169.254.169.254", "[fe80::1]"} {
		res := p.Post(context.Background(), Request{
			URL: "http://" + host + ":" + port + "/", ID: "msg_1", Body: []byte("{}"),
			Signers: []*Signer{signer}, Timeout: 2 * time.Second,
		})
		if !errors.Is(res.Err, ErrForbiddenAddress) {
			t.Errorf("%s: got %v (status %d), want ErrForbiddenAddress", host, res.Err, res.StatusCode)
		}
	}
	if n.Load() != 0 {
		t.Errorf("the target got %d requests, want none", n.Load())
	}
}

func TestPosterFollowsNoRedirect(t *testing.T) {
	t.Parallel()
	srv, n := target(t, http.StatusFound, map[string]string{"Location": "http://169.254.169.254/latest"})
	p := NewPoster(Guard{AllowLoopback: true}, 4096, time.Now)
	t.Cleanup(p.Close)
	signer, _ := NewSigner(testSecret)
	res := p.Post(context.Background(), Request{URL: srv.URL, ID: "m", Body: []byte("{}"), Signers: []*Signer{signer}, Timeout: 2 * time.Second})
	if res.StatusCode != http.StatusFound || res.OK() || n.Load() != 1 {
		t.Errorf("got status %d ok %v after %d requests, want the 302 itself as a failure", res.StatusCode, res.OK(), n.Load())
	}
	if res.ResponseHeaders["Location"] != "http://169.254.169.254/latest" {
		t.Errorf("kept headers %v, want Location", res.ResponseHeaders)
	}
}
