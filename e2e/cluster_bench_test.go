package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestClusterBench measures a control plane of three servers (network
// namespaces, embedded 3-member etcd, the servers' default leader and
// election timeouts): creates per second through one server and through
// all three beside the raw etcd put rate of the same cluster, and the
// failover after kill -9 of the leader, over several kills. It prints
// figures and asserts nothing about them; it runs only when asked:
//
//	POLYVISOR_BENCH_CLUSTER=1 go test -count=1 -run TestClusterBench -v -timeout 30m ./e2e/
//
// POLYVISOR_BENCH_CREATES (default 600), POLYVISOR_BENCH_CONC (16) and
// POLYVISOR_BENCH_KILLS (10) size it.
func TestClusterBench(t *testing.T) {
	if os.Getenv("POLYVISOR_BENCH_CLUSTER") == "" {
		t.Skip("a benchmark: set POLYVISOR_BENCH_CLUSTER=1 to run it")
	}
	creates, conc, kills := envInt("POLYVISOR_BENCH_CREATES", 600), envInt("POLYVISOR_BENCH_CONC", 16), envInt("POLYVISOR_BENCH_KILLS", 10)
	// The defaults of `polyvisor server`, not the tests' short ones.
	clusterLeaderTTL, clusterEtcdElection, clusterHeartbeatTO = "5s", "1s", "15s"
	t.Cleanup(func() { clusterLeaderTTL, clusterEtcdElection, clusterHeartbeatTO = "2s", "500ms", "5s" })

	tc := newTestCluster(t, 3)
	ctx := context.Background()
	s1 := tc.s[0]
	uploadKernel(t, s1.tls(""))
	tc.startFleet(20)
	clients := []*client.Client{s1.tls(""), tc.s[1].tls(""), tc.s[2].tls("")}

	// Raw etcd: puts of a VM-sized value through s1's member.
	vmJSON := rawVMJSON(t, s1, clients[0])
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(s1.dataDir, "etcd.sock")}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	defer cli.Delete(context.WithoutCancel(ctx), "/polyvisor-bench/", clientv3.WithPrefix())
	raw := timed(creates, conc, func(i int) error {
		_, err := cli.Put(ctx, fmt.Sprintf("/polyvisor-bench/put/vm-%06d", i), vmJSON)
		return err
	})
	t.Logf("BENCH raw etcd put (%d bytes, through s1's member): %s", len(vmJSON), raw)

	for _, phase := range []struct {
		name string
		via  []*client.Client
	}{{"1 server", clients[:1]}, {"3 servers", clients}} {
		prefix := fmt.Sprintf("b%d-", len(phase.via))
		r := timed(creates, conc, func(i int) error {
			_, err := phase.via[i%len(phase.via)].CreateVM(ctx, simVM(prefix+strconv.Itoa(i)), client.CreateOptions{})
			return err
		})
		t.Logf("BENCH creates through %s: %s; %.0f%% of the raw put rate", phase.name, r, 100*r.perSec/raw.perSec)
		raw2 := timed(creates/2, conc, func(i int) error {
			_, err := cli.Put(ctx, fmt.Sprintf("/polyvisor-bench/put2/vm-%06d", i), vmJSON)
			return err
		})
		t.Logf("BENCH raw etcd put again, after the creates through %s: %s", phase.name, raw2)
	}

	// The same through 3 servers, the creates spread over 16 projects: each
	// project's quota has its own admission record, which the creates of
	// one project take in turn.
	const projects = 16
	var viaProject [][]*client.Client
	for p := range projects {
		name := fmt.Sprintf("bench%d", p)
		if _, err := clients[0].CreateProject(ctx, api.ProjectCreate{Name: name}); err != nil {
			t.Fatal(err)
		}
		uploadKernel(t, clients[0].WithProject(name))
		viaProject = append(viaProject, []*client.Client{clients[0].WithProject(name), clients[1].WithProject(name), clients[2].WithProject(name)})
	}
	r := timed(creates, conc, func(i int) error {
		_, err := viaProject[i%projects][i%3].CreateVM(ctx, simVM("bp-"+strconv.Itoa(i)), client.CreateOptions{})
		return err
	})
	t.Logf("BENCH creates through 3 servers into %d projects: %s; %.0f%% of the raw put rate", projects, r, 100*r.perSec/raw.perSec)

	// Failover: kill -9 the leader while probers create through the
	// other servers; the time to the first create answered
	// 202, to the new leader's term, and to that create's operation done.
	var first202, leaderAt, opDone []time.Duration
	for k := range kills {
		lead, _, err := tc.leader(0)
		for lead < 0 || err != nil {
			time.Sleep(200 * time.Millisecond)
			lead, _, err = tc.leader((k + 1) % 3)
		}
		var others []*client.Client
		var otherIdx []int
		for i := range tc.s {
			if i != lead {
				others, otherIdx = append(others, tc.s[i].tls("")), append(otherIdx, i)
			}
		}
		killed := time.Now()
		tc.s[lead].kill9()
		var wg sync.WaitGroup
		var got atomic.Pointer[api.Operation]
		var at atomic.Int64
		pctx, stop := context.WithTimeout(ctx, time.Minute)
		// Four callers, 250ms apart, each giving a request a second: the
		// first 202 is seen within a quarter second of when it could be.
		for w := range 4 {
			wg.Go(func() {
				time.Sleep(time.Duration(w) * 250 * time.Millisecond)
				for n := 0; pctx.Err() == nil && got.Load() == nil; n++ {
					rctx, cancel := context.WithTimeout(pctx, time.Second)
					op, err := others[w%2].CreateVM(rctx, simVM(fmt.Sprintf("f%d-%d-%d", k, w, n)), client.CreateOptions{})
					cancel()
					if err == nil && got.CompareAndSwap(nil, op) {
						at.Store(int64(time.Since(killed)))
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		stop()
		op := got.Load()
		if op == nil {
			t.Fatalf("kill %d: no create succeeded within a minute", k)
		}
		first202 = append(first202, time.Duration(at.Load()))
		done := waitOp(t, others[0], op.ID)
		opDone = append(opDone, time.Since(killed))
		if done.Status != api.OpSucceeded {
			t.Fatalf("kill %d: the first create's operation ended %s", k, done.Status)
		}
		var since time.Time
		eventually(t, time.Minute, "a new leader", func() error {
			l, ls, err := tc.leader(otherIdx[0])
			if err != nil || l < 0 || l == lead {
				return fmt.Errorf("leader %d %v", l, err)
			}
			since = ls.LeaderSince
			return nil
		})
		leaderAt = append(leaderAt, since.Sub(killed))
		t.Logf("BENCH kill %d of %s: first 202 %v, new leader's term %v, its operation done %v; load average %s", k+1, tc.s[lead].name,
			first202[k].Round(time.Millisecond), leaderAt[k].Round(time.Millisecond), opDone[k].Round(time.Millisecond), loadavg())
		// The killed server comes back as a follower before the next kill.
		tc.s[lead].start()
		eventually(t, time.Minute, "three healthy voting servers", func() error {
			list, err := others[0].ListServers(ctx)
			if err != nil {
				return err
			}
			for _, sv := range list {
				if !sv.Healthy || sv.Learner {
					return fmt.Errorf("server %+v", sv)
				}
			}
			return nil
		})
	}
	t.Logf("BENCH failover over %d kills: first 202 %s; new leader's term %s; first operation done %s", kills,
		pctl(first202), pctl(leaderAt), pctl(opDone))
}

// loadavg is the machine's 1-minute load average: the machine is shared.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// rate is a timed batch of requests.
type rate struct {
	n      int
	conc   int
	wall   time.Duration
	perSec float64
	lat    []time.Duration
	errs   int
	// firstErrs are the first errors, for the report.
	firstErrs []string
}

func (r rate) String() string {
	return fmt.Sprintf("%d requests, %d at a time, %.2fs: %.0f/s, latency %s, %d errors %q; load average after: %s", r.n, r.conc, r.wall.Seconds(), r.perSec, pctl(r.lat), r.errs, r.firstErrs, loadavg())
}

// timed runs f for 0..n-1 with conc callers.
func timed(n, conc int, f func(i int) error) rate {
	var next atomic.Int64
	var mu sync.Mutex
	r := rate{n: n, conc: conc}
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				err := f(i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					r.errs++
					if r.errs <= 3 {
						r.firstErrs = append(r.firstErrs, err.Error())
					}
				} else {
					r.lat = append(r.lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r.wall = time.Since(start)
	r.perSec = float64(len(r.lat)) / r.wall.Seconds()
	return r
}

// pctl is the p50, p99 and max of ds.
func pctl(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("p50 %v p99 %v max %v", at(0.5).Round(100*time.Microsecond), at(0.99).Round(100*time.Microsecond), s[len(s)-1].Round(100*time.Microsecond))
}

// rawVMJSON is a VM as the servers store it: one is made and read back.
func rawVMJSON(t *testing.T, s *clusterServer, c *client.Client) string {
	t.Helper()
	op, err := c.CreateVM(context.Background(), simVM("raw-sample"), client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitOp(t, c, op.ID)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(s.dataDir, "etcd.sock")}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/polyvisor/v1/vms/"+api.Key(api.DefaultProject, "raw-sample"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the stored VM: %v %+v", err, resp)
	}
	return string(resp.Kvs[0].Value)
}
