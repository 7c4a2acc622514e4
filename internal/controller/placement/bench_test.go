package placement

import (
	"context"
	"testing"

	"github.com/polyvisor/polyvisor/internal/scheduler"
)

// BenchmarkPlace10k places one VM at a time (each released before the
// next) on a fleet of 10,000 hosts: every host looked at, and the
// default sample (5 % of the hosts with room).
func BenchmarkPlace10k(b *testing.B) {
	for _, bc := range []struct {
		name string
		pct  int
	}{{"all-hosts", 100}, {"sampled", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			p, _ := newPlacerOf(b, scheduler.Config{SamplePercent: bc.pct},
				fleet(10000, func(i int) int64 { return 65536 + int64(i%97) })...)
			ctx := context.Background()
			req := scheduler.Request{VCPUs: 2, MemoryMiB: 4096}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_, _, release, err := p.Place(ctx, req, OwnHosts)
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
	}
}
