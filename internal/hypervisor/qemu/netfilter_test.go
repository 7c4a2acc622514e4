package qemu

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestGuestsDeniedStorageEndpoints installs the guests' rules in a network
// namespace of its own and connects from sockets made as the guests' user
// and as root: the guests' user is refused the denied endpoint and the
// loopback, and reaches another port of the same address; root reaches
// them all; rules written again with no endpoint let the guests' user in.
func TestGuestsDeniedStorageEndpoints(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace and nftables")
	}
	const guestUID = 64999
	errs := make(chan error, 1)
	go func() {
		// The thread stays in its namespace and ends with the goroutine.
		runtime.LockOSThread()
		errs <- denyInNamespace(t, guestUID)
	}()
	select {
	case err := <-errs:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the namespace's checks did not end")
	}
}

func denyInNamespace(t *testing.T, uid int) error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	// 10.99.0.1 stands for a storage host's address on this host's network.
	addr, err := netlink.ParseAddr("10.99.0.1/32")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(lo, addr); err != nil {
		return err
	}
	listen := func(addr string) (netip.AddrPort, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return netip.AddrPort{}, err
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return netip.MustParseAddrPort(ln.Addr().String()), nil
	}
	storage, err := listen("10.99.0.1:0")
	if err != nil {
		return err
	}
	other, err := listen("10.99.0.1:0")
	if err != nil {
		return err
	}
	loop, err := listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	// dial connects from a socket owned by owner (the socket's owner is
	// the thread's filesystem uid when it is made).
	dial := func(owner int, to netip.AddrPort) error {
		unix.Setfsuid(owner)
		defer unix.Setfsuid(0)
		c, err := net.DialTimeout("tcp", to.String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	check := func(when string, owner int, to netip.AddrPort, refused bool) error {
		err := dial(owner, to)
		switch {
		case refused && !errors.Is(err, syscall.ECONNREFUSED):
			return &checkError{when, owner, to, "refused", err}
		case !refused && err != nil:
			return &checkError{when, owner, to, "reached", err}
		}
		return nil
	}
	if err := check("before any rule", uid, storage, false); err != nil {
		return err
	}
	if err := closeToGuests(uint32(uid), []netip.AddrPort{storage}); err != nil {
		return err
	}
	for _, c := range []struct {
		owner   int
		to      netip.AddrPort
		refused bool
	}{{uid, storage, true}, {uid, loop, true}, {uid, other, false}, {0, storage, false}, {0, loop, false}} {
		if err := check("with the storage endpoint denied", c.owner, c.to, c.refused); err != nil {
			return err
		}
	}
	if err := closeToGuests(uint32(uid), nil); err != nil {
		return err
	}
	if err := check("with no endpoint denied", uid, storage, false); err != nil {
		return err
	}
	return check("with no endpoint denied", uid, loop, true)
}

type checkError struct {
	when  string
	owner int
	to    netip.AddrPort
	want  string
	err   error
}

func (e *checkError) Error() string {
	return e.when + ": uid " + strconv.Itoa(e.owner) + " to " + e.to.String() + " should be " + e.want + ", got: " + errString(e.err)
}

func errString(err error) string {
	if err == nil {
		return "connected"
	}
	return err.Error()
}
