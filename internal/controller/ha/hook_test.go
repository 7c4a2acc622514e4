package ha

import (
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// The fence hook gets the host's reported address only when it is an IP
// address, its output is kept bounded, and a child it leaves behind with
// the output open does not hold it past its timeout.
func TestHookAddressAndOutput(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.7": "10.0.0.7", "10.0.0.7:7443": "10.0.0.7", "[fd00::1]:7443": "fd00::1",
		"": "", "node2; rm -rf /": "", "$(reboot)": "", "evil\nPATH=/tmp": "", "fe80::1%eth0": "",
	} {
		if got := hookAddress(in); got != want {
			t.Errorf("hookAddress(%q) = %q, want %q", in, got, want)
		}
	}
	c := New(Config{HookTimeout: 2 * time.Second,
		Hook: []string{"sh", "-c", `printf "%s" "$POLYVISOR_HOST_ADDRESS"; head -c 1000000 /dev/zero | tr '\0' x; (sleep 30 &); exit 0`}})
	h := &api.Host{Meta: api.Meta{Name: "n1"}, Fence: &api.HostFence{State: api.FencePending, Deadline: time.Unix(1, 0)}}
	h.Status.Address = "evil; reboot"
	began := time.Now()
	c.startHook(h)
	var r *hookRun
	for time.Since(began) < 10*time.Second {
		if r = c.hookOutcome(h); r != nil && r.done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r == nil || !r.done {
		t.Fatal("the hook did not finish: a child holding its output keeps it")
	}
	if strings.Contains(r.out, "evil") {
		t.Errorf("the hook was given the unvalidated address: %.80q", r.out)
	}
	// Its output still open, the hook's word is not trusted.
	if r.ok {
		t.Errorf("a hook whose output stayed open counts as ok: %.200q", r.out)
	}
	b := &capped{max: hookOutputMax}
	for range 100 {
		b.Write(make([]byte, 4096))
	}
	if len(b.buf) != hookOutputMax {
		t.Errorf("kept %d bytes of the output, want %d", len(b.buf), hookOutputMax)
	}
}
