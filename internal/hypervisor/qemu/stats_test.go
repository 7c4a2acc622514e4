package qemu

import (
	"context"
	"os"
	"testing"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

func TestParseVmRSS(t *testing.T) {
	n, err := parseVmRSS([]byte("Name:\tqemu\nVmPeak:\t 900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n"))
	if err != nil || n != 12345<<10 {
		t.Fatalf("parseVmRSS = %d, %v", n, err)
	}
	for _, bad := range []string{"Name: x\n", "VmRSS: 12 MB\n", "VmRSS: x kB\n"} {
		if _, err := parseVmRSS([]byte(bad)); err == nil {
			t.Errorf("parseVmRSS(%q) took it", bad)
		}
	}
}

// TestStatsOfAProcess samples this test's own process the way a QEMU's is
// sampled: it has used some CPU and holds some memory.
func TestStatsOfAProcess(t *testing.T) {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	h := &hypervisor.Handle{UID: "self", PID: os.Getpid(), PIDStart: st.Start}
	var s hypervisor.Stats
	sum := 0
	for tries := 0; tries < 200 && s.CPUSeconds == 0; tries++ {
		for i := range 1_000_000 { // burn a little CPU: /proc counts in 10 ms ticks
			sum += i * i
		}
		if s, err = (&Driver{}).Stats(context.Background(), h); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("sampled after burning (%d)", sum%7)
	if s.CPUSeconds <= 0 || s.MemoryBytes < 1<<20 {
		t.Errorf("stats %+v: want some CPU time and at least 1 MiB resident", s)
	}
	if _, err := (&Driver{}).Stats(context.Background(), &hypervisor.Handle{UID: "gone", PID: 1 << 30}); err == nil {
		t.Error("stats of a process that does not exist")
	}
}
