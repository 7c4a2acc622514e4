package guest

import (
	"os"
	"testing"
)

func TestBuildIsCachedAndComplete(t *testing.T) {
	p := Build(t)
	for _, f := range []string{p.Kernel, p.Initrd, p.Disk} {
		fi, err := os.Stat(f)
		if err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if q := Build(t); q != p {
		t.Errorf("second Build = %+v, want %+v", q, p)
	}
	if os.Getenv("POLYVISOR_GUEST_DIR") == "" {
		script, err := findScript()
		if err != nil {
			t.Fatal(err)
		}
		if !builtBy(p.Dir, script) {
			t.Errorf("%s is not stamped as built by %s", p.Dir, script)
		}
	}
}
