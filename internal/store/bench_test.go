package store

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// benchParallelism is goroutines per GOMAXPROCS in the write benchmarks:
// the API serves many requests at once, and etcd batches their commits.
const benchParallelism = 16

func benchStore(b *testing.B) *testStore {
	b.Helper()
	return openStore(b, Config{DataDir: b.TempDir(), Logger: testLogger(b)})
}

// BenchmarkRawEtcdPut is the floor: a plain etcd put of a VM, with no
// precondition and no wait for the index.
func BenchmarkRawEtcdPut(b *testing.B) {
	s := benchStore(b)
	ctx := testCtx(b)
	payload, _ := json.Marshal(newVM("bench"))
	b.SetBytes(int64(len(payload)))
	var n atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := s.vms.Key("raw-" + strconv.FormatInt(n.Add(1), 10))
			if _, err := s.Client().Put(ctx, key, string(payload)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}

// BenchmarkCollectionCreate is Collection.Create: a conditional txn, then a
// wait until the watch has put the object in the index.
func BenchmarkCollectionCreate(b *testing.B) {
	s := benchStore(b)
	ctx := testCtx(b)
	payload, _ := json.Marshal(newVM("bench"))
	b.SetBytes(int64(len(payload)))
	var n atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			name := "vm-" + strconv.FormatInt(n.Add(1), 10)
			if _, err := s.vms.Create(ctx, name, newVM(name)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// fill writes n VMs named vm-00000... in transactions of 100.
func fill(b *testing.B, s *testStore, n int) {
	b.Helper()
	ctx := testCtx(b)
	var ops []clientv3.Op
	var rev int64
	flush := func() {
		resp, err := s.Client().Txn(ctx).Then(ops...).Commit()
		if err != nil {
			b.Fatalf("fill: %v", err)
		}
		rev, ops = resp.Header.Revision, ops[:0]
	}
	for i := range n {
		name := fmt.Sprintf("vm-%05d", i)
		payload, _ := json.Marshal(newVM(name))
		ops = append(ops, clientv3.OpPut(s.vms.Key(name), string(payload)))
		if len(ops) == 100 {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
	if err := s.WaitRev(ctx, rev); err != nil {
		b.Fatal(err)
	}
	if s.vms.Len() != n {
		b.Fatalf("index holds %d, want %d", s.vms.Len(), n)
	}
}

// BenchmarkGet reads random VMs out of 10,000 while another goroutine keeps
// updating them, and reports the 99th percentile of a read.
func BenchmarkGet(b *testing.B) {
	s := benchStore(b)
	const n = 10000
	fill(b, s, n)
	ctx, stop := context.WithCancel(testCtx(b))
	var writer sync.WaitGroup
	writer.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("vm-%05d", i%n)
			cur, _ := s.vms.Get(name)
			next := Clone(cur)
			next.Status.PID++
			if _, err := s.vms.Update(ctx, name, next, cur.Version); err != nil && ctx.Err() == nil {
				b.Error(err)
				return
			}
		}
	})
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 1))
		var mine []time.Duration
		for pb.Next() {
			name := fmt.Sprintf("vm-%05d", r.IntN(n))
			start := time.Now()
			_, ok := s.vms.Get(name)
			mine = append(mine, time.Since(start))
			if !ok {
				b.Error("missing")
				return
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	stop()
	writer.Wait()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

func BenchmarkList500(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	b.ResetTimer()
	for b.Loop() {
		items, next, err := s.vms.List(ListOptions[api.VM]{Limit: 500})
		if err != nil || len(items) != 500 || next == "" {
			b.Fatalf("list: %d items, %q, %v", len(items), next, err)
		}
		items, _, err = s.vms.List(ListOptions[api.VM]{Limit: 500, Continue: next})
		if err != nil || len(items) != 500 {
			b.Fatalf("list page 2: %d items, %v", len(items), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/page")
}

// BenchmarkLoad10k times a full reload of 10,000 VMs (what Start and a
// watch recovery do) and reports the memory of the whole process, the
// embedded etcd included, holding them.
func BenchmarkLoad10k(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 10000)
	ctx := testCtx(b)
	b.ResetTimer()
	for b.Loop() {
		// Force every object to be decoded again, as on a cold start.
		for _, ix := range s.collections {
			ix.replace(nil, 0)
			ix.publish()
		}
		if _, err := s.load(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(rssMiB(), "rss-MiB")
}

// rssMiB is the process's resident set size.
func rssMiB() float64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
