package netplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Most of the dataplane is made through netlink sockets opened in the
// namespace they act on. What the kernel ties to the calling thread's
// namespace instead (opening /dev/net/tun, /proc/sys/net, spawning
// dnsmasq, making a namespace) runs on a thread of its own, locked and
// moved into the namespace, and given back only once moved back.

// inNetns runs fn on a locked OS thread in the network namespace ns. The
// thread is thrown away, not reused, when it cannot be moved back.
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("reading the thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Left locked: the goroutine's end ends the thread.
			errc <- errors.Join(ferr, fmt.Errorf("leaving network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// nsfsMagic is the file system type of a namespace file (NSFS_MAGIC).
const nsfsMagic = 0x6e736673

// isNetnsMount tells whether path is a namespace file bind-mounted there.
func isNetnsMount(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == nsfsMagic
}

// openNamedNetns opens the network namespace bound at path.
func openNamedNetns(path string) (netns.NsHandle, error) {
	if !isNetnsMount(path) {
		return -1, fmt.Errorf("%s is not a network namespace: %w", path, os.ErrNotExist)
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		return -1, fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	return h, nil
}

// bindNetns keeps the namespace of fd alive at path, as ip netns does in
// /run/netns.
func bindNetns(source, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("making namespace file %s: %w", path, err)
	}
	f.Close()
	if err := unix.Mount(source, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("binding network namespace at %s: %w", path, err)
	}
	return nil
}

// createNamedNetns makes a new network namespace kept at path, with its
// loopback up.
func createNamedNetns(path string) (netns.NsHandle, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return -1, fmt.Errorf("making namespace dir: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("reading the thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("making network namespace: %w", err)
			return
		}
		berr := bindNetns("/proc/self/task/"+strconv.Itoa(unix.Gettid())+"/ns/net", path)
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(berr, fmt.Errorf("leaving network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- berr
	}()
	if err := <-errc; err != nil {
		return -1, err
	}
	h, err := openNamedNetns(path)
	if err != nil {
		return -1, err
	}
	if err := setLinkUp(h, "lo"); err != nil {
		h.Close()
		return -1, err
	}
	return h, nil
}

// deleteNamedNetns unbinds the namespace at path; it ends once nothing
// else holds it.
func deleteNamedNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unbinding network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing namespace file %s: %w", path, err)
	}
	return nil
}

// sysctl writes a value under /proc/sys/net in namespace ns, unless it
// already holds it; key is the path below /proc/sys/net ("ipv4/ip_forward").
// It reports whether it wrote.
func sysctl(ns netns.NsHandle, key, value string) (bool, error) {
	changed := false
	err := inNetns(ns, func() error {
		p := "/proc/sys/net/" + key
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == value {
			return nil
		}
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("setting /proc/sys/net/%s to %s: %w", key, value, err)
		}
		changed = true
		return nil
	})
	return changed, err
}

// sameNetns tells whether two handles are one namespace.
func sameNetns(a, b netns.NsHandle) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a), &sa) != nil || unix.Fstat(int(b), &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
