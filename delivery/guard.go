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
// connect time, on the resolved address, so DNS rebinding cannot dodge it.
type Guard struct {
	// AllowLoopback permits 127.0.0.0/8 and ::1 (sluice dev sets it).
	AllowLoopback bool
	// AllowPrivate permits private, link-local and unique-local ranges.
	AllowPrivate bool
}

var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, ...
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba
}

// Check reports why addr may not be dialled, or nil.
func (g Guard) Check(addr netip.Addr) error {
	addr = addr.Unmap()
	for _, m := range metadataAddrs {
		if addr == m {
			return fmt.Errorf("%w: %s is a cloud metadata address", ErrForbiddenAddress, addr)
		}
	}
	switch {
	case addr.IsLoopback():
		if !g.AllowLoopback {
			return fmt.Errorf("%w: %s is loopback", ErrForbiddenAddress, addr)
		}
	case addr.IsPrivate(), addr.IsLinkLocalUnicast():
		if !g.AllowPrivate {
			return fmt.Errorf("%w: %s is private or link-local", ErrForbiddenAddress, addr)
		}
	case addr.IsUnspecified(), addr.IsMulticast(), addr.IsLinkLocalMulticast(), addr.IsInterfaceLocalMulticast():
		return fmt.Errorf("%w: %s is unspecified or multicast", ErrForbiddenAddress, addr)
	}
	return nil
}

// control is a net.Dialer.Control that applies the guard.
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
