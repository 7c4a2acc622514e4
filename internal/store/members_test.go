package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/pki"
)

// memberOf is the member config of server name in dataDir, with peer
// certificates issued by the CA of caDir.
func memberOf(t *testing.T, caDir, dataDir, name string, port int) *MemberConfig {
	t.Helper()
	dir := filepath.Join(dataDir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.ReadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.InstallCA(dir, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.EnsurePeerCert(dir, []string{"127.0.0.1"}, pki.CertOptions{}); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return &MemberConfig{Name: name, PeerListen: addr, PeerURL: "https://" + addr,
		CertFile: filepath.Join(dir, pki.PeerCertFile), KeyFile: filepath.Join(dir, pki.PeerKeyFile), CAFile: filepath.Join(dir, pki.CACertFile),
		ElectionTimeout: 500 * time.Millisecond}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func openMember(t *testing.T, dataDir string, m *MemberConfig) *Store {
	t.Helper()
	st, err := Open(testCtx(t), Config{DataDir: dataDir, Member: m, Logger: testLogger(t).With("member", m.Name)})
	if err != nil {
		t.Fatalf("opening member %s: %v", m.Name, err)
	}
	t.Cleanup(func() { st.Close() })
	NewCollection(st, "vms", setVMVersion)
	if err := st.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return st
}

// addLearner adds a learner, trying again while etcd takes no change of
// members: a member promoted a moment ago is not trusted with one until it
// has been connected to the others for a while.
func addLearner(t *testing.T, through *Store, name, peerURL string) (uint64, []Member, error) {
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		id, members, err := through.AddLearner(testCtx(t), name, peerURL)
		if !errors.Is(err, ErrMemberBusy) || time.Now().After(deadline) {
			return id, members, err
		}
	}
}

// TestMembersJoinAndLeave: a first member listening for peers; a second
// and a third added as learners, which start from the cluster's member
// list, catch up and promote themselves; a write through one is read
// through the others; etcd refuses to remove a live member when that
// would leave the others without a quorum up; a member removed stops.
func TestMembersJoinAndLeave(t *testing.T) {
	caDir := t.TempDir()
	if _, err := pki.EnsureCA(caDir); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	d1 := t.TempDir()
	s1 := openMember(t, d1, memberOf(t, caDir, d1, "s1", freeTCPPort(t)))
	if !s1.Clustered() || s1.LocalMember() == 0 {
		t.Fatalf("first member: clustered %v, id %x", s1.Clustered(), s1.LocalMember())
	}

	join := func(name string, through *Store) (*Store, string) {
		dir := t.TempDir()
		m := memberOf(t, caDir, dir, name, freeTCPPort(t))
		id, members, err := addLearner(t, through, name, m.PeerURL)
		if err != nil {
			t.Fatalf("adding %s: %v", name, err)
		}
		m.Join, m.InitialCluster = true, InitialCluster(members)
		st := openMember(t, dir, m)
		if st.LocalMember() != id {
			t.Fatalf("%s runs as member %x, was added as %x", name, st.LocalMember(), id)
		}
		return st, dir
	}
	s2, _ := join("s2", s1)
	s3, d3 := join("s3", s2)

	ms, err := s3.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("members: %+v", ms)
	}
	for _, m := range ms {
		if m.Learner || m.Name == "" {
			t.Errorf("member %+v: want a started voting member", m)
		}
	}
	// One store: a write through s1 is read through s3.
	if err := s1.PutKey(ctx, "probe", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if v, err := s3.GetKey(ctx, "probe"); err != nil || string(v) != "v" {
		t.Fatalf("reading through s3: %q %v", v, err)
	}

	// A second learner while one is catching up is refused for now.
	if _, _, err := addLearner(t, s1, "s4", "https://127.0.0.1:1"); err != nil {
		t.Fatalf("adding a learner that never starts: %v", err)
	}
	if _, _, err := s1.AddLearner(ctx, "s5", "https://127.0.0.1:2"); !errors.Is(err, ErrMemberBusy) {
		t.Fatalf("adding a second learner: %v, want ErrMemberBusy", err)
	}
	ms, _ = s1.Members(ctx)
	for _, m := range ms {
		if m.Learner {
			if err := s1.RemoveMember(ctx, m.ID); err != nil {
				t.Fatalf("removing the learner that never started: %v", err)
			}
		}
	}

	// s3 removed: it stops, and the two left still write.
	if err := s1.RemoveMember(ctx, s3.LocalMember()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s3.Removed():
	case <-time.After(20 * time.Second):
		t.Fatal("the removed member did not stop")
	}
	if err := s2.PutKey(ctx, "after", []byte("x"), 0); err != nil {
		t.Fatalf("writing with two members left: %v", err)
	}
	// Its data dir cannot start again.
	_, err = Open(testCtx(t), Config{DataDir: d3, Member: memberOf(t, caDir, d3, "s3", freeTCPPort(t)), Logger: testLogger(t)})
	if err == nil {
		t.Fatal("a removed member started again from its data dir")
	}

	// With s2 stopped, removing s1 would leave s2 alone and down: etcd
	// refuses (and the server checks it first, cluster.CheckRemoval).
	s2.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s1.RemoveMember(rctx, s1.LocalMember()); err == nil {
		t.Fatal("etcd removed the only live member of two")
	}
}
