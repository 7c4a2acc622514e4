package hypervisor

import "testing"

func TestParseNBDExport(t *testing.T) {
	addr, name, err := ParseNBDExport("nbd://10.0.0.5:10809/5f0c-uid")
	if err != nil || addr.String() != "10.0.0.5:10809" || name != "5f0c-uid" {
		t.Fatalf("got %v %q %v", addr, name, err)
	}
	if addr, _, err := ParseNBDExport("nbd://[fd00::1]:10809/x"); err != nil || addr.Port() != 10809 {
		t.Fatalf("ipv6: %v %v", addr, err)
	}
	for _, bad := range []string{"", "rbd:pool/img", "nbd://host:10809/x", "nbd://10.0.0.5/x", "nbd://10.0.0.5:10809", "nbd://10.0.0.5:10809/", "nbd://10.0.0.5:10809/a/b", "nbd://10.0.0.5:10809/a\x00"} {
		if _, _, err := ParseNBDExport(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
