package audit

import (
	"context"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// BenchmarkAppendParallel appends from many goroutines at once, as the API
// server does under load, so that records share syncs.
func BenchmarkAppendParallel(b *testing.B) {
	l, err := Open(b.Context(), b.TempDir(), Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			r := api.AuditRecord{
				Actor:     api.AuditActor{Kind: "user", Name: "alice", Token: "0123456789abcdef"},
				Remote:    "192.0.2.10:51234",
				RequestID: "5f1c2d3e4a5b6c7d",
				Method:    "POST",
				Path:      "/v1/vms/web-01/start",
				Action:    "vm.start",
				Project:   "default",
				Resource:  api.Ref{Kind: "vm", Name: "web-01"},
				Outcome:   api.AuditSuccess,
				Status:    202,
			}
			if err := l.Append(ctx, &r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if syncs := l.syncs.Load(); syncs > 0 {
		b.ReportMetric(float64(b.N)/float64(syncs), "records/sync")
	}
}
