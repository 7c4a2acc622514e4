package libvirt

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// Tests in this file need no daemon.

func TestDomainXMLGolden(t *testing.T) {
	cases := map[string]newDomain{
		"tcg-default-network": {
			Name: "web-1", VirtType: "qemu", Arch: "x86_64", VCPUs: 2, MemoryMiB: 1024,
			Disk: "/var/lib/polyvisor-libvirt/web-1.qcow2", NICType: "network", NICSource: "default",
			SerialLog: "/var/log/libvirt/qemu/web-1-serial.log",
			Volumes:   []volMeta{{Pool: "polyvisor", Name: "web-1.qcow2", Key: "/var/lib/polyvisor-libvirt/web-1.qcow2"}},
		},
		"kvm-user-nic": {
			Name: "db&<1>", VirtType: "kvm", Arch: "x86_64", VCPUs: 1, MemoryMiB: 512,
			Disk: "/pool/db.qcow2", NICType: "user",
			SerialLog: "/var/log/libvirt/qemu/db-serial.log",
			Volumes:   []volMeta{{Pool: "fast", Name: "db.qcow2"}},
		},
		"no-nic": {
			Name: "bare", VirtType: "qemu", Arch: "x86_64", VCPUs: 1, MemoryMiB: 256,
			Disk: "/p/bare.qcow2", Volumes: []volMeta{{Pool: "polyvisor", Name: "bare.qcow2"}},
		},
	}
	for name, nd := range cases {
		t.Run(name, func(t *testing.T) {
			got := nd.xml() + "\n"
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("domain xml differs from %s:\n%s", path, got)
			}
			// What the provider writes, it reads back.
			d, err := parseDomain(got)
			if err != nil {
				t.Fatal(err)
			}
			if d.Name != nd.Name || d.Metadata.Polyvisor == nil || len(d.Metadata.Polyvisor.Volumes) != 1 ||
				d.Metadata.Polyvisor.Volumes[0] != nd.Volumes[0] {
				t.Errorf("round trip: %+v", d)
			}
		})
	}
}

const sampleDomain = `<domain type='kvm' id='7'>
  <name>web</name>
  <uuid>8d51d543-e274-402c-9980-fac28c6e5a25</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='GiB'>2</memory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw'/>
      <source pool='data' volume='web-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/debian.iso'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:cd'/>
      <source bridge='br0'/>
    </interface>
    <interface type='user'>
      <mac address='52:54:00:aa:bb:ce'/>
    </interface>
    <graphics type='vnc' port='5901' autoport='yes' listen='0.0.0.0' passwd='s3cret'>
      <listen type='address' address='0.0.0.0'/>
    </graphics>
  </devices>
</domain>`

func TestParseDomain(t *testing.T) {
	d, err := parseDomain(sampleDomain)
	if err != nil {
		t.Fatal(err)
	}
	vm := d.vm("qemu:///system")
	want := provider.VM{
		ID: "8d51d543-e274-402c-9980-fac28c6e5a25", Name: "web", Path: "qemu:///system/web",
		VCPUs: 2, MemoryMiB: 2048, GuestOS: "http://debian.org/debian/12",
		Disks: []provider.Disk{
			{Name: "vda", Format: "qcow2", Path: "/var/lib/libvirt/images/web.qcow2"},
			{Name: "vdb", Format: "raw", Path: "data/web-data"},
		},
		NICs: []provider.NIC{
			{MAC: "52:54:00:aa:bb:cc", Network: "default"},
			{MAC: "52:54:00:aa:bb:cd", Network: "br0"},
			{MAC: "52:54:00:aa:bb:ce", Network: "user"},
		},
	}
	if fmt.Sprintf("%+v", vm) != fmt.Sprintf("%+v", want) {
		t.Errorf("vm\n got %+v\nwant %+v", vm, want)
	}
	if g := d.Devices.Graphics; len(g) != 1 || g[0].Port != 5901 || g[0].Passwd != "s3cret" {
		t.Errorf("graphics %+v", g)
	}
}

func TestParseURI(t *testing.T) {
	cases := []struct {
		uri               string
		network, address  string
		remote            string
		unsupported, fail bool
	}{
		{uri: "qemu:///system", network: "unix", address: systemSocket, remote: "qemu:///system"},
		{uri: "qemu:///session", network: "unix", address: systemSocket, remote: "qemu:///session"},
		{uri: "test:///default", network: "unix", address: systemSocket, remote: "test:///default"},
		{uri: "xen:///", network: "unix", address: systemSocket, remote: "xen:///"},
		{uri: "xen://", network: "unix", address: systemSocket, remote: "xen:///"},
		{uri: "qemu+unix:///system?socket=/tmp/s", network: "unix", address: "/tmp/s", remote: "qemu:///system"},
		{uri: "qemu+tcp://kvm1/system", network: "tcp", address: "kvm1:16509", remote: "qemu:///system"},
		{uri: "qemu+tcp://10.0.0.5:1234/system", network: "tcp", address: "10.0.0.5:1234", remote: "qemu:///system"},
		{uri: "qemu+tcp://[fd00::1]/system", network: "tcp", address: "[fd00::1]:16509", remote: "qemu:///system"},
		{uri: "qemu+ssh://root@kvm1/system", unsupported: true},
		{uri: "qemu+libssh2://kvm1/system", unsupported: true},
		{uri: "qemu://kvm1/system", unsupported: true}, // TLS
		{uri: "qemu+tls://kvm1/system", unsupported: true},
		{uri: "/var/run/libvirt", fail: true},
		{uri: "qemu+tcp:///system", fail: true},
		{uri: "Q!:///x", fail: true},
	}
	for _, c := range cases {
		ep, err := parseURI(c.uri)
		switch {
		case c.unsupported:
			if !errors.Is(err, provider.ErrUnsupported) {
				t.Errorf("%s: err %v, want ErrUnsupported", c.uri, err)
			}
		case c.fail:
			if err == nil {
				t.Errorf("%s: parsed as %+v, want an error", c.uri, ep)
			}
		case err != nil:
			t.Errorf("%s: %v", c.uri, err)
		case ep.network != c.network || ep.address != c.address || ep.remote != c.remote:
			t.Errorf("%s: got %s %s %s, want %s %s %s", c.uri, ep.network, ep.address, ep.remote, c.network, c.address, c.remote)
		}
	}
	if got := vmPath("xen:///", "a"); got != "xen:///a" {
		t.Errorf("vmPath = %s", got)
	}
	if got := vmPath("qemu:///system", "a"); got != "qemu:///system/a" {
		t.Errorf("vmPath = %s", got)
	}
}

func TestClassify(t *testing.T) {
	le := func(code golibvirt.ErrorNumber, msg string) error {
		return golibvirt.Error{Code: uint32(code), Message: msg}
	}
	cases := []struct {
		err  error
		want error
	}{
		{le(golibvirt.ErrNoDomain, "Domain not found"), provider.ErrNotFound},
		{le(golibvirt.ErrNoDomainSnapshot, "no snapshot"), provider.ErrNotFound},
		{le(golibvirt.ErrOperationInvalid, "domain is not running"), provider.ErrBadState},
		{le(golibvirt.ErrAuthFailed, "authentication failed"), provider.ErrAuth},
		{le(golibvirt.ErrAccessDenied, "access denied"), provider.ErrAuth},
		{le(golibvirt.ErrRPC, "authentication required"), provider.ErrAuth},
		{le(golibvirt.ErrNoConnect, "no connection driver available for xen:///"), provider.ErrUnreachable},
		{le(golibvirt.ErrStorageVolExist, "exists"), provider.ErrExists},
		{le(golibvirt.ErrOperationUnsupported, "no"), provider.ErrUnsupported},
		{golibvirt.ErrInterrupted, provider.ErrUnreachable},
		{fmt.Errorf("send: %w", errors.New("x")), nil},
	}
	for _, c := range cases {
		got := classify(c.err)
		if c.want == nil {
			if got != c.err {
				t.Errorf("%v: classified as %v", c.err, got)
			}
			continue
		}
		if !errors.Is(got, c.want) || !errors.Is(got, c.err) {
			t.Errorf("%v: got %v, want it to wrap %v and the original", c.err, got, c.want)
		}
	}
}

func TestUUID(t *testing.T) {
	const s = "8d51d543-e274-402c-9980-fac28c6e5a25"
	u, err := parseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	if uuidString(u) != s {
		t.Errorf("round trip %s", uuidString(u))
	}
	for _, bad := range []string{"", "web-1", "8d51d543-e274-402c-9980-fac28c6e5a2z"} {
		if _, err := parseUUID(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
