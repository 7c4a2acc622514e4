package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// TestClusterExternalEtcd runs two servers, each in its network
// namespace, over one external etcd (--etcd-endpoints) in the root
// namespace: the second joins the first for the shared CA and secrets
// and embeds no etcd; both name the same leader and serve the same
// state, and when the leader is killed the other leads.
func TestClusterExternalEtcd(t *testing.T) {
	t.Parallel() // its own network namespaces, bridge and data dirs; no guests
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (apt-get install etcd-server; scripts/test.sh installs it)")
	}
	cn := newClusterNet(t, 2)
	dir := t.TempDir()
	clientURL := fmt.Sprintf("http://%s:2379", cn.hostIP)
	peerURL := fmt.Sprintf("http://%s:2380", cn.hostIP)
	etcd := exec.Command(etcdBin, "--name", "ext", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "ext="+peerURL,
		"--heartbeat-interval", "20", "--election-timeout", "200", "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")
	etcdLog := &syncBuffer{}
	etcd.Stdout, etcd.Stderr = etcdLog, etcdLog
	if err := etcd.Start(); err != nil {
		t.Fatal(err)
	}
	etcdDone := make(chan struct{})
	go func() { _ = etcd.Wait(); close(etcdDone) }()
	t.Cleanup(func() {
		_ = etcd.Process.Kill()
		<-etcdDone
		if t.Failed() {
			t.Logf("etcd log:\n%s", lastLines(etcdLog.String(), 50))
		}
	})
	eventually(t, 20*time.Second, "the external etcd listens", func() error {
		select {
		case <-etcdDone:
			t.Fatalf("etcd exited:\n%s", etcdLog)
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:2379", cn.hostIP), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})

	tc := &testCluster{t: t, net: cn}
	for i := range 2 {
		s := &clusterServer{t: t, name: fmt.Sprintf("s%d", i+1), ns: cn.ns[i], ip: cn.ip[i], dataDir: t.TempDir(), etcd: clientURL}
		tc.s = append(tc.s, s)
		t.Cleanup(func() {
			s.stop()
			if t.Failed() {
				t.Logf("server %s log (last 100 lines):\n%s", s.name, lastLines(s.allLogs(), 100))
			}
		})
		if i > 0 {
			tok, err := tc.s[0].local().CreateServerJoinToken(context.Background(), api.JoinTokenCreate{})
			if err != nil {
				t.Fatal(err)
			}
			s.args = []string{"--join", tc.s[0].url(), "--join-token", tok.Token}
		}
		s.start()
	}
	s1, s2 := tc.s[0], tc.s[1]
	if _, err := os.Stat(filepath.Join(s2.dataDir, "etcd")); err == nil {
		t.Errorf("server %s over an external etcd made an embedded one in %s", s2.name, s2.dataDir)
	}
	ctx := context.Background()

	// Both name the same leader, which is one of them.
	var lead int
	eventually(t, 30*time.Second, "both servers name one leader", func() error {
		l1, _, err1 := tc.leader(0)
		l2, _, err2 := tc.leader(1)
		if err1 != nil || err2 != nil || l1 < 0 || l1 != l2 {
			return fmt.Errorf("s1 names %d (%v), s2 names %d (%v)", l1, err1, l2, err2)
		}
		lead = l1
		return nil
	})
	t.Logf("leader: %s", tc.s[lead].name)

	// The same state through either: a project made through s1 is seen
	// through s2, and both list both servers.
	if _, err := s1.tls("").CreateProject(ctx, api.ProjectCreate{Name: "shared"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.tls("").GetProject(ctx, "shared"); err != nil {
		t.Fatalf("the project made through s1, through s2: %v", err)
	}
	for _, s := range tc.s {
		list, err := s.local().ListServers(ctx)
		if err != nil || len(list) != 2 {
			t.Fatalf("servers listed by %s: %+v %v", s.name, list, err)
		}
	}

	// The leader killed, the other leads.
	other := 1 - lead
	tc.s[lead].kill9()
	eventually(t, 30*time.Second, tc.s[other].name+" leads", func() error {
		if l, _, err := tc.leader(other); err != nil || l != other {
			return fmt.Errorf("leader %d %v", l, err)
		}
		return nil
	})
}
