package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestClusterThreeServers joins two servers to a first one, each in its
// own network namespace with an embedded etcd member, and checks what the
// servers share and that the control plane outlives its leader: the CA,
// secrets key and admin token handed over at join; an image imported
// through one server copied to every server's image store; audit records
// written by each server answered by any; a quota of 7 VMs holding
// against 30 creates at once through the three; creates through every server
// while the leader is killed (kill -9): each create answered 202 exists
// once and its operation finishes, none refused exists, no VM starts
// twice (200 creates at once, the leader killed while they run); simulated
// hosts whose server died report to another; and the
// dead server removed with its etcd member.
func TestClusterThreeServers(t *testing.T) {
	t.Parallel() // its own network namespaces, bridge and data dirs; no guests
	tc := newTestCluster(t, 3)
	ctx := context.Background()
	s1, s2, s3 := tc.s[0], tc.s[1], tc.s[2]

	// The shared material: one CA, one secrets key, one admin token.
	for _, f := range []string{"pki/ca.crt", "pki/ca.key", "secret.key", "admin.token", "metrics.token"} {
		want := readFile(t, filepath.Join(s1.dataDir, f))
		for _, s := range []*clusterServer{s2, s3} {
			if got := readFile(t, filepath.Join(s.dataDir, f)); !bytes.Equal(got, want) {
				t.Errorf("server %s's %s differs from s1's", s.name, f)
			}
		}
	}
	// Each server's own token is its own.
	if bytes.Equal(readFile(t, filepath.Join(s1.dataDir, "peer.token")), readFile(t, filepath.Join(s2.dataDir, "peer.token"))) {
		t.Error("s1 and s2 hold the same server token")
	}
	// The joined servers' API certificates are issued by the shared CA:
	// a client trusting s1's CA reaches them.
	for _, s := range []*clusterServer{s2, s3} {
		c := s.tls("")
		if _, err := c.ClusterStatus(ctx); err != nil {
			t.Fatalf("server %s over TLS with s1's CA: %v", s.name, err)
		}
	}

	// An image imported through s1 is copied to every server.
	img := uploadKernel(t, s1.tls(""))
	for _, s := range tc.s {
		path := filepath.Join(s.dataDir, "images", "sha256", img.SHA256) // the blob of its content
		eventually(t, 30*time.Second, "server "+s.name+" holds the image", func() error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != img.SHA256 {
				return fmt.Errorf("copy at %s has sha256 %x, the image %s", path, sum, img.SHA256)
			}
			return nil
		})
	}

	fleet := tc.startFleet(3)
	clients := []*client.Client{s1.tls(""), s2.tls(""), s3.tls("")}

	// Audit: a create through each server, all found through s3.
	for i, c := range clients {
		name := fmt.Sprintf("a%d", i+1)
		op, err := c.CreateVM(ctx, simVM(name), client.CreateOptions{})
		if err != nil {
			t.Fatalf("create %s through %s: %v", name, tc.s[i].name, err)
		}
		waitOp(t, c, op.ID)
	}
	recs, err := clients[2].ListAudit(ctx, api.AuditQuery{Action: "vm.create", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	byServer := map[string]int{}
	for _, r := range recs {
		byServer[r.Server]++
	}
	for _, s := range tc.s {
		if byServer[s.name] == 0 {
			t.Errorf("the audit query through s3 holds no vm.create written by %s: %v", s.name, byServer)
		}
	}

	// A quota across servers: 30 creates at once, through all three,
	// into a project with room for 7 VMs: exactly 7 are admitted.
	room := int64(7)
	if _, err := clients[0].CreateProject(ctx, api.ProjectCreate{Name: "q", Quota: api.Quota{VMs: &room}}); err != nil {
		t.Fatal(err)
	}
	uploadKernel(t, clients[0].WithProject("q"))
	for i, c := range clients {
		eventually(t, 10*time.Second, "server "+tc.s[i].name+" sees the image ready", func() error {
			img, err := c.WithProject("q").GetImage(ctx, "k")
			if err == nil && img.State != api.ImageReady {
				err = fmt.Errorf("image %s", img.State)
			}
			return err
		})
	}
	var admitted atomic.Int32
	var qwg sync.WaitGroup
	for i := range 30 {
		qwg.Go(func() {
			_, err := clients[i%3].WithProject("q").CreateVM(ctx, simVM(fmt.Sprintf("q%02d", i)), client.CreateOptions{})
			switch code := client.ErrorCode(err); {
			case err == nil:
				admitted.Add(1)
			case code != api.CodeUnprocessable || !strings.Contains(err.Error(), "quota"):
				t.Errorf("create q%02d through %s: %v, want 202 or over the quota", i, tc.s[i%3].name, err)
			}
		})
	}
	qwg.Wait()
	qvms, err := clients[1].WithProject("q").ListVMs(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if admitted.Load() != 7 || len(qvms.Items) != 7 {
		t.Fatalf("quota of 7 VMs, 30 creates through 3 servers: %d answered 202, %d exist", admitted.Load(), len(qvms.Items))
	}

	// Kill the leader in the middle of creates through every server.
	lead, _, err := tc.leader(0)
	if err != nil || lead < 0 {
		t.Fatalf("no leader: %d %v", lead, err)
	}
	t.Logf("leader: %s", tc.s[lead].name)
	const creates = 200
	type answer struct {
		name  string
		op    *api.Operation
		err   error
		via   int
		tries int
	}
	var unavailable atomic.Int32
	answers := make([]answer, creates)
	var wg sync.WaitGroup
	killed := make(chan time.Time, 1)
	// All creates are in flight at once: they wait on a gate, and the
	// leader is killed while they run.
	gate := make(chan struct{})
	for i := range creates {
		wg.Go(func() {
			via := i % 3
			name := fmt.Sprintf("k%03d", i)
			<-gate
			if i%8 != 0 {
				time.Sleep(time.Duration(i) * 5 * time.Millisecond)
			}
			// As a careful client does: a request that found no server, or
			// a 503 (the store electing its leader: the create may or may
			// not have been made), is repeated with the same key through
			// the next server.
			deadline := time.Now().Add(40 * time.Second)
			for try := 0; ; try++ {
				srv := (via + try) % 3
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				op, err := clients[srv].CreateVM(cctx, simVM(name), client.CreateOptions{IdempotencyKey: "key-" + name})
				cancel()
				code := client.ErrorCode(err)
				if err == nil || (code != "" && code != api.CodeUnavailable) || time.Now().After(deadline) {
					answers[i] = answer{name: name, op: op, err: err, via: srv, tries: try + 1}
					return
				}
				if code == api.CodeUnavailable {
					unavailable.Add(1)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	start := time.Now()
	close(gate)
	time.Sleep(creates * 5 * time.Millisecond / 2)
	tc.s[lead].kill9()
	killed <- time.Now()
	wg.Wait()
	killedAt := <-killed
	t.Logf("%d creates through 3 servers, the leader killed %s in: all answered after %s", creates, killedAt.Sub(start).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// A new leader, among the living.
	var alive []int
	for i := range tc.s {
		if i != lead {
			alive = append(alive, i)
		}
	}
	eventually(t, 30*time.Second, "a new leader", func() error {
		l, _, err := tc.leader(alive[0])
		if err != nil {
			return err
		}
		if l < 0 || l == lead {
			return fmt.Errorf("leader %d", l)
		}
		return nil
	})

	// Every create was answered 202 in the end, exists once and its
	// operation ends.
	c := clients[alive[0]]
	t.Logf("%d answers were 503 while the store elected its leader", unavailable.Load())
	var firstAct time.Time // the first operation finished after the kill: by the new leader
	for _, a := range answers {
		if a.err != nil {
			t.Errorf("create %s through %s refused after %d tries: %v", a.name, tc.s[a.via].name, a.tries, a.err)
			continue
		}
		done := waitOp(t, c, a.op.ID)
		if done.Status != api.OpSucceeded {
			t.Errorf("create %s: operation %s ended %s: %+v", a.name, done.ID, done.Status, done.Error)
		}
		if done.FinishedAt.After(killedAt) && (firstAct.IsZero() || done.FinishedAt.Before(firstAct)) {
			firstAct = done.FinishedAt
		}
	}
	if !firstAct.IsZero() {
		t.Logf("the new leader finished its first operation %s after the kill", firstAct.Sub(killedAt).Round(time.Millisecond))
	}
	vms, err := c.ListVMs(ctx, api.ListOptions{Limit: 500, AllProjects: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, vm := range vms.Items {
		seen[vm.Key()]++
	}
	for _, a := range answers {
		if seen[api.Key(api.DefaultProject, a.name)] != 1 {
			t.Errorf("create %s exists %d times", a.name, seen[api.Key(api.DefaultProject, a.name)])
		}
	}

	// The hosts that talked to the dead server report to another: the new
	// leader, which judges every host a heartbeat timeout after its term
	// began, finds every host ready then.
	_, newLeader, err := tc.leader(alive[0])
	if err != nil || newLeader == nil {
		t.Fatalf("the new leader: %+v %v", newLeader, err)
	}
	t.Logf("the new leader %s began its term %s after the kill", newLeader.Name, newLeader.LeaderSince.Sub(killedAt).Round(time.Millisecond))
	hbTimeout, _ := time.ParseDuration(clusterHeartbeatTO)
	time.Sleep(time.Until(newLeader.LeaderSince.Add(hbTimeout + 3*time.Second)))
	hosts, err := c.ListHosts(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts.Items {
		if h.Status.State != api.HostReady {
			t.Errorf("host %s is %s %s after the new leader's term began: it did not move to another server", h.Name, h.Status.State, time.Since(newLeader.LeaderSince).Round(time.Millisecond))
		}
	}
	// Every VM runs, and none was started twice.
	eventually(t, 30*time.Second, "every VM runs once", func() error {
		st := fleet.readStats(t)
		if st.VMs != len(vms.Items) || st.Running != len(vms.Items) {
			return fmt.Errorf("fleet holds %d VMs, %d running, of %d", st.VMs, st.Running, len(vms.Items))
		}
		if st.Starts != int64(len(vms.Items)) {
			t.Fatalf("the hosts made %d starts for %d VMs", st.Starts, len(vms.Items))
		}
		return nil
	})

	// The dead server goes, with its etcd member, through the CLI; the
	// rest keep working.
	cliOf := tc.s[alive[0]]
	if out, err := cliOf.cli("cluster", "remove", tc.s[lead].name); err != nil {
		t.Fatalf("polyvisor cluster remove %s: %v\n%s", tc.s[lead].name, err, out)
	}
	eventually(t, 20*time.Second, "two servers listed", func() error {
		list, err := c.ListServers(ctx)
		if err != nil {
			return err
		}
		if len(list) != 2 {
			return fmt.Errorf("%d servers: %+v", len(list), list)
		}
		for _, sv := range list {
			if sv.Name == tc.s[lead].name || !sv.Healthy {
				return fmt.Errorf("server %+v", sv)
			}
		}
		return nil
	})
	out, err := cliOf.cli("cluster", "list")
	if err != nil || strings.Contains(out, tc.s[lead].name+" ") || !strings.Contains(out, tc.s[alive[0]].name) || !strings.Contains(out, tc.s[alive[1]].name) {
		t.Fatalf("polyvisor cluster list after the removal: %v\n%s", err, out)
	}
	op, err := clients[alive[1]].CreateVM(ctx, simVM("after"), client.CreateOptions{})
	if err != nil {
		t.Fatalf("create after the removal: %v", err)
	}
	if done := waitOp(t, c, op.ID); done.Status != api.OpSucceeded {
		t.Fatalf("create after the removal ended %s", done.Status)
	}
}

// cli runs the polyvisor CLI against the server's unix socket, as local
// root.
func (s *clusterServer) cli(args ...string) (string, error) {
	home := s.t.TempDir()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "POLYVISOR_CONFIG=", "POLYVISOR_TOKEN=", "POLYVISOR_PROJECT=",
		"POLYVISOR_SERVER=unix://"+s.socket())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitOp waits, at most a minute, for an operation to end.
func waitOp(t *testing.T, c *client.Client, id string) *api.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	op, err := c.WaitOperation(ctx, id, nil)
	if err != nil {
		t.Fatalf("waiting for operation %s: %v", id, err)
	}
	return op
}

// TestClusterPartitionedLeader cuts the leader's link in its namespace:
// it stops leading before another server's term begins, the others go on
// (a create through them is carried out, on a host that talked to the cut
// server too), and once its link is back it agrees with the others on who
// leads and serves again.
func TestClusterPartitionedLeader(t *testing.T) {
	t.Parallel() // its own network namespaces, bridge and data dirs; no guests
	tc := newTestCluster(t, 3)
	ctx := context.Background()
	uploadKernel(t, tc.s[0].tls(""))
	tc.startFleet(2)
	lead, _, err := tc.leader(0)
	if err != nil || lead < 0 {
		t.Fatalf("no leader: %d %v", lead, err)
	}
	old := tc.s[lead]
	var others []int
	for i := range tc.s {
		if i != lead {
			others = append(others, i)
		}
	}
	cut := time.Now()
	tc.net.partition(t, lead)
	var next *api.ClusterServer
	eventually(t, 30*time.Second, "a leader among the others", func() error {
		l, ls, err := tc.leader(others[0])
		if err != nil || l < 0 || l == lead {
			return fmt.Errorf("leader %d %v", l, err)
		}
		next = ls
		return nil
	})
	t.Logf("server %s leads %s after the cut", next.Name, next.LeaderSince.Sub(cut).Round(time.Millisecond))
	// The cut-off leader noticed its term ended before the next began.
	var stopped time.Time
	eventually(t, 20*time.Second, old.name+" stops leading", func() error {
		for _, l := range old.logged("no longer leading the controllers") {
			if l.Time.After(cut) {
				stopped = l.Time
				return nil
			}
		}
		return errors.New("not logged yet")
	})
	if !stopped.Before(next.LeaderSince) {
		t.Fatalf("%s stopped leading at %s, after %s's term began at %s", old.name, stopped.Format(time.StampMilli), next.Name, next.LeaderSince.Format(time.StampMilli))
	}
	t.Logf("%s stopped leading %s before %s began", old.name, next.LeaderSince.Sub(stopped).Round(time.Millisecond), next.Name)
	c := tc.s[others[1]].tls("")
	op, err := c.CreateVM(ctx, simVM("during"), client.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	done, err := c.WaitOperation(wctx, op.ID, nil)
	wcancel()
	if err != nil || done.Status != api.OpSucceeded {
		hosts, _ := c.ListHosts(ctx, api.ListOptions{})
		vm, _ := c.GetVM(ctx, "during")
		t.Fatalf("create during the cut: %v %+v; vm %+v; hosts %+v", err, done, vm, hosts)
	}

	tc.net.heal(t, lead)
	eventually(t, 30*time.Second, old.name+" follows and serves again", func() error {
		st, err := old.local().ClusterStatus(ctx)
		if err != nil {
			return err
		}
		if st.Leader == nil {
			return errors.New("no leader")
		}
		if l, _, err := tc.leader(others[0]); err != nil || l < 0 || tc.s[l].name != st.Leader.Name {
			return fmt.Errorf("%s sees %s lead, %s sees %d (%v)", old.name, st.Leader.Name, tc.s[others[0]].name, l, err)
		}
		list, err := old.local().ListServers(ctx)
		if err != nil {
			return err
		}
		for _, sv := range list {
			if !sv.Healthy {
				return fmt.Errorf("server %+v", sv)
			}
		}
		return nil
	})
	// Leadership may have moved meanwhile (the store's members elect again
	// when the cut member returns); normally it stays with the new leader.
	if _, ls, _ := tc.leader(lead); ls != nil {
		t.Logf("after the heal %s leads (%s led during the cut)", ls.Name, next.Name)
	}
	oc := old.tls("")
	op, err = oc.CreateVM(ctx, simVM("after"), client.CreateOptions{})
	if err != nil {
		t.Fatalf("create through %s after it came back: %v", old.name, err)
	}
	// Read through the server that wrote: another server's index may not
	// hold the operation yet for a moment.
	if done := waitOp(t, oc, op.ID); done.Status != api.OpSucceeded {
		t.Fatalf("create after the cut ended %s", done.Status)
	}
}
