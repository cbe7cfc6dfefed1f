package delivery

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// ErrForbiddenAddress is returned when a target resolves to an address the
// guard refuses.
var ErrForbiddenAddress = errors.New("target address not allowed")

// Guard decides which addresses deliveries may connect to. It runs at
// connect time, on the resolved address of every connection (the
// dialer's Control hook), so DNS rebinding cannot dodge it: a name that
// resolved to a public address when checked and to a private one when
// dialled is refused at the dial.
//
// Always refused, whatever is allowed: cloud metadata and credential
// addresses (169.254.169.254 and fd00:ec2::254 instance metadata,
// 169.254.170.2 ECS task credentials, 169.254.170.23 and fd00:ec2::23 EKS
// Pod Identity, 100.100.100.200 Alibaba), unspecified, "this network"
// (0.0.0.0/8), multicast, broadcast and the reserved 240.0.0.0/4. Refused
// unless allowed: loopback (127.0.0.0/8, ::1) and private ranges (RFC 1918,
// CGNAT 100.64.0.0/10, link-local 169.254.0.0/16 and fe80::/10, unique
// local fc00::/7, site-local fec0::/10). IPv4 addresses written as IPv6
// (::ffff:a.b.c.d, ::a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo
// 2001::/32 with its client address de-obfuscated) are judged by the IPv4
// address inside.
type Guard struct {
	// AllowLoopback permits 127.0.0.0/8 and ::1 (sluice dev sets it).
	AllowLoopback bool
	// AllowPrivate permits private, CGNAT, link-local and unique-local
	// ranges.
	AllowPrivate bool
}

var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, ...
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IPv6
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task credentials
	netip.MustParseAddr("169.254.170.23"),  // AWS EKS Pod Identity
	netip.MustParseAddr("fd00:ec2::23"),    // AWS EKS Pod Identity, IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba
}

var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	reserved    = netip.MustParsePrefix("240.0.0.0/4") // includes 255.255.255.255
	cgnat       = netip.MustParsePrefix("100.64.0.0/10")
	siteLocal   = netip.MustParsePrefix("fec0::/10")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
	teredo      = netip.MustParsePrefix("2001::/32")
	v4Compat    = netip.MustParsePrefix("::/96")
)

// Check reports why addr may not be dialled, or nil.
func (g Guard) Check(addr netip.Addr) error {
	addr = embeddedIPv4(addr.WithZone(""))
	for _, m := range metadataAddrs {
		if addr == m {
			return fmt.Errorf("%w: %s is a cloud metadata or credential address", ErrForbiddenAddress, addr)
		}
	}
	switch {
	case addr.IsUnspecified(), thisNetwork.Contains(addr), reserved.Contains(addr):
		return fmt.Errorf("%w: %s is unspecified or reserved", ErrForbiddenAddress, addr)
	case addr.IsMulticast(), addr.IsLinkLocalMulticast(), addr.IsInterfaceLocalMulticast():
		return fmt.Errorf("%w: %s is multicast", ErrForbiddenAddress, addr)
	case addr.IsLoopback():
		if !g.AllowLoopback {
			return fmt.Errorf("%w: %s is loopback", ErrForbiddenAddress, addr)
		}
	case addr.IsPrivate(), addr.IsLinkLocalUnicast(), cgnat.Contains(addr), siteLocal.Contains(addr):
		if !g.AllowPrivate {
			return fmt.Errorf("%w: %s is private or link-local", ErrForbiddenAddress, addr)
		}
	}
	return nil
}

// embeddedIPv4 returns the IPv4 address an IPv6 form carries (mapped,
// compatible, NAT64, 6to4, Teredo), or addr itself.
func embeddedIPv4(addr netip.Addr) netip.Addr {
	if addr.Is4In6() {
		return addr.Unmap()
	}
	if !addr.Is6() {
		return addr
	}
	b := addr.As16()
	switch {
	case nat64.Contains(addr):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case sixToFour.Contains(addr):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	case teredo.Contains(addr):
		// The client's address is the last 32 bits, inverted (RFC 4380).
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
	case v4Compat.Contains(addr) && !addr.IsLoopback() && !addr.IsUnspecified():
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	return addr
}

// control is a net.Dialer.Control that applies the guard to the address
// about to be dialled.
func (g Guard) control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
	}
	return g.Check(addr)
}
