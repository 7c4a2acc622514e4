package server

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
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

// internalDisk is what the internal test server serves: a raw disk with a
// secret in it.
var internalDisk = append([]byte("internal-secret "), make([]byte, 1<<20-16)...)

// internalServer is a real HTTP server on loopback, standing for a service
// of the server's own network. It counts the requests it gets.
func internalServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/disk.raw":
			w.Write(internalDisk)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// waitDone returns a function that waits, through c, for the end of the
// operation a call started.
func waitDone(t *testing.T, c *client.Client) func(*api.Operation, error) *api.Operation {
	return func(op *api.Operation, err error) *api.Operation {
		t.Helper()
		if err != nil {
			t.Fatalf("starting the operation: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done, err := c.WaitOperation(ctx, op.ID, nil)
		if err != nil {
			t.Fatalf("waiting for %s: %v", op.ID, err)
		}
		return done
	}
}

// imageFiles lists the files of the server's image store: imports under
// way and blobs.
func (e *env) imageFiles() []string {
	dir := filepath.Join(e.dataDir, "images")
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, en := range entries {
		if en.Name() == "sha256" {
			blobs, _ := os.ReadDir(filepath.Join(dir, "sha256"))
			for _, b := range blobs {
				names = append(names, "sha256/"+b.Name())
			}
			continue
		}
		names = append(names, en.Name())
	}
	return names
}

// qemuImg runs qemu-img, failing the test if it fails.
func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestImageImportRefusesInternalURLs: a project member cannot make the
// server fetch from its loopback, private or metadata addresses, however
// the URL spells them, and the failures are one and the same message:
// no port scan, no status, no size. A superadmin is told the detail.
func TestImageImportRefusesInternalURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	srv, hits := internalServer(t)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	member := e.as(api.RoleMember, "pa")
	before := e.imageFiles()
	urls := []string{
		srv.URL + "/disk.raw",
		srv.URL + "/missing",
		"http://" + closedPort(t) + "/disk.raw",
		"http://localhost:" + port + "/disk.raw",
		"http://[::ffff:127.0.0.1]:" + port + "/disk.raw",
		"http://0.0.0.0:" + port + "/disk.raw",
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.1:22/",
		"http://no-such-host.invalid:" + port + "/disk.raw", // a name that does not resolve
	}
	var first string
	for i, u := range urls {
		name := fmt.Sprintf("ssrf-%d", i)
		done := waitDone(t, member)(member.ImportImageURL(context.Background(), api.ImageCreate{Name: name, URL: u}))
		if done.Status != api.OpFailed || done.Error == nil {
			t.Fatalf("import of %s: %s, want failed", u, done.Status)
		}
		msg := strings.Replace(done.Error.Message, u, "URL", 1)
		for _, leak := range []string{"127.0.0.1", "loopback", "refused", "404", "private", "169.254", "10.0.0.1", "bytes"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: the member is told %q: %s", u, leak, done.Error.Message)
			}
		}
		if first == "" {
			first = msg
		} else if msg != first {
			t.Errorf("%s: the member is told\n  %s\nbut for %s\n  %s", u, msg, urls[0], first)
		}
		if _, err := member.GetImage(context.Background(), name); statusOfErr(err) != http.StatusNotFound {
			t.Errorf("image %s after a refused import: %v", name, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the internal server got %d requests", n)
	}
	if after := e.imageFiles(); len(after) != len(before) {
		t.Fatalf("image store holds %v after refused imports, had %v", after, before)
	}

	// A superadmin is told what the destination is; the log has it too.
	admin := e.super.WithProject("pa")
	done := waitDone(t, admin)(admin.ImportImageURL(context.Background(), api.ImageCreate{Name: "by-admin", URL: srv.URL + "/disk.raw"}))
	if done.Status != api.OpFailed || !strings.Contains(done.Error.Message, "127.0.0.1, a loopback address") {
		t.Errorf("superadmin's import: %s %+v, want the detail", done.Status, done.Error)
	}
	if !strings.Contains(e.logs.String(), "a loopback address") {
		t.Error("the server's log does not say why the fetch was refused")
	}
}

// TestImageImportRefusesOwnAddresses: a member cannot make the server
// fetch from a service of its own bound to every address, through the
// address of one of its interfaces, even where a superadmin allowed the
// network that address is on; a superadmin may allow the one address.
func TestImageImportRefusesOwnAddresses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	var own netip.Addr
	var lan netip.Prefix
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ip, _ := netip.AddrFromSlice(n.IP)
			if ip = ip.Unmap(); ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				ones, _ := n.Mask.Size()
				own, lan = ip, netip.PrefixFrom(ip, ones).Masked()
				break
			}
		}
	}
	if !own.IsValid() {
		t.Skip("this machine has no IPv4 address but loopback and link-local ones")
	}
	var hits atomic.Int64
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(internalDisk)
	})}
	go web.Serve(l)
	defer web.Close()
	u := fmt.Sprintf("http://%s:%d/secret.txt", own, l.Addr().(*net.TCPAddr).Port)
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{lan.String()}}); err != nil {
		t.Fatal(err)
	}
	member := e.as(api.RoleMember, "pa")
	done := waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "own", URL: u}))
	if done.Status != api.OpFailed || hits.Load() != 0 {
		t.Fatalf("import from the server's own %s with %s allowed: %s, %d requests served", own, lan, done.Status, hits.Load())
	}
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{own.String() + "/32"}}); err != nil {
		t.Fatal(err)
	}
	done = waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "own", URL: u}))
	if done.Status != api.OpSucceeded {
		t.Fatalf("import from the server's own address once allowed: %s %+v", done.Status, done.Error)
	}
}

// TestImageFetchAllowList: a superadmin allows a network; imports from it
// then work, its errors still name no status to members, and the change
// is audited. The settings are checked field by field.
func TestImageFetchAllowList(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	srv, hits := internalServer(t)
	member := e.as(api.RoleMember, "pa")
	if _, err := e.as(api.RoleAdmin, "pa").SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.0/8"}}); statusOfErr(err) != http.StatusForbidden {
		t.Fatalf("project admin setting the allow-list: %v, want 403", err)
	}
	set, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32", " 127.0.0.1/32"}, FetchAllowHosts: []string{"Mirror.Internal."}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(set.FetchAllowNetworks, ",") != "127.0.0.1/32" || strings.Join(set.FetchAllowHosts, ",") != "mirror.internal" ||
		set.MaxVirtualBytes != api.DefaultImageMaxVirtualBytes || set.MaxImportsPerProject != api.DefaultImageMaxImportsPerProject {
		t.Errorf("settings in force: %+v", set)
	}
	if got, err := e.super.ImageSettings(ctx); err != nil || got.FetchAllowNetworks[0] != "127.0.0.1/32" {
		t.Errorf("GET image-settings = %+v, %v", got, err)
	}

	done := waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "mirror", URL: srv.URL + "/disk.raw"}))
	if done.Status != api.OpSucceeded {
		t.Fatalf("import from an allowed network: %s %+v", done.Status, done.Error)
	}
	body, _, err := member.ImageContent(ctx, "mirror")
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	// Allowed, but not public: its statuses are not the member's to see.
	done = waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "gone", URL: srv.URL + "/missing"}))
	if done.Status != api.OpFailed || strings.Contains(strings.Replace(done.Error.Message, srv.URL, "URL", 1), "404") {
		t.Errorf("member's failed import: %s %+v, want failed without the status", done.Status, done.Error)
	}
	admin := e.super.WithProject("pa")
	done = waitDone(t, admin)(admin.ImportImageURL(ctx, api.ImageCreate{Name: "gone", URL: srv.URL + "/missing"}))
	if done.Status != api.OpFailed || !strings.Contains(done.Error.Message, "404 Not Found") {
		t.Errorf("superadmin's failed import: %s %+v, want the status", done.Status, done.Error)
	}
	if hits.Load() != 3 {
		t.Errorf("the allowed server got %d requests, want 3", hits.Load())
	}

	recs, err := e.super.ListAudit(ctx, api.AuditQuery{Action: "image-settings.set"})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range recs {
		if r.Actor.Name == bootstrapUser && r.Outcome == api.AuditSuccess && strings.Contains(r.Message, "fetchAllowNetworks=[127.0.0.1/32]") {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit record of the allow-list change: %+v", recs)
	}

	for _, bad := range []struct {
		set   api.ImageSettings
		field string
	}{
		{api.ImageSettings{FetchAllowNetworks: []string{"10.0.0.0/33"}}, "fetchAllowNetworks[0]"},
		{api.ImageSettings{FetchAllowNetworks: []string{"10.0.0.0/8", "0.0.0.0/0"}}, "fetchAllowNetworks[1]"},
		{api.ImageSettings{FetchAllowNetworks: []string{"::/0"}}, "fetchAllowNetworks[0]"},
		{api.ImageSettings{FetchAllowHosts: []string{"a b"}}, "fetchAllowHosts[0]"},
		{api.ImageSettings{FetchAllowHosts: []string{"10.0.0.1"}}, "fetchAllowHosts[0]"},
		{api.ImageSettings{MaxVirtualBytes: 5}, "maxVirtualBytes"},
		{api.ImageSettings{MaxImportsPerProject: -1}, "maxImportsPerProject"},
		{api.ImageSettings{ConvertTimeoutSeconds: 1}, "convertTimeoutSeconds"},
	} {
		_, err := e.super.SetImageSettings(ctx, bad.set)
		var se *client.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest || se.Err.Field != bad.field {
			t.Errorf("settings %+v: %v, want 400 naming %s", bad.set, err, bad.field)
		}
	}
}

// TestImageURLCredentials: credentials in an image URL are used for the
// download and never stored, shown, logged or audited.
func TestImageURLCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	const secret = "s3cret-passw0rd"
	var authorized atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != secret {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		authorized.Add(1)
		w.Write(internalDisk)
	}))
	defer srv.Close()
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32"}}); err != nil {
		t.Fatal(err)
	}
	member := e.as(api.RoleMember, "pa")
	u := strings.Replace(srv.URL, "http://", "http://alice:"+secret+"@", 1) + "/disk.raw"
	done := waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "private-mirror", URL: u}))
	if done.Status != api.OpSucceeded || authorized.Load() != 1 {
		t.Fatalf("import with credentials: %s %+v, %d authorized requests", done.Status, done.Error, authorized.Load())
	}
	img, err := member.GetImage(ctx, "private-mirror")
	if err != nil {
		t.Fatal(err)
	}
	if img.Source != srv.URL+"/disk.raw" {
		t.Errorf("source = %q, want the URL without credentials", img.Source)
	}
	// A failing one, too: its message and the log hold no password.
	bad := strings.Replace(u, "/disk.raw", "/other", 1)
	bad = strings.Replace(bad, secret, secret+"-wrong", 1)
	done = waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "refused", URL: bad}))
	if done.Status != api.OpFailed || strings.Contains(done.Error.Message, secret) {
		t.Errorf("failed import: %s %+v", done.Status, done.Error)
	}
	if logs := e.logs.String(); strings.Contains(logs, secret) || strings.Contains(logs, "alice:") {
		t.Error("the server's log holds the credentials")
	}
	if found := scanFiles(t, e.dataDir, []string{secret}); len(found) > 0 {
		t.Errorf("the password is stored: %v", found)
	}
	ops, _ := member.ListAllOperations(ctx, api.ListOptions{})
	for _, op := range ops {
		if strings.Contains(fmt.Sprint(op), secret) {
			t.Errorf("operation %s shows the password", op.ID)
		}
	}
}

// TestImageURLQuerySecrets: the query of an image URL (a pre-signed
// URL's signature, a private token) is used for the download and never
// stored, shown, logged or audited, nor told in an operation's error, to
// members or superadmins; sources an older server stored with it are
// rewritten at start.
func TestImageURLQuerySecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	const secret = "s3cretSignature0123"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("X-Amz-Signature") != secret {
			http.Error(w, "signature does not match", http.StatusForbidden)
			return
		}
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write(internalDisk)
	}))
	defer srv.Close()
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32"}}); err != nil {
		t.Fatal(err)
	}
	query := "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=" + secret + "&private_token=" + secret
	member := e.as(api.RoleMember, "pa")
	done := waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "presigned", URL: srv.URL + "/disk.raw" + query}))
	if done.Status != api.OpSucceeded {
		t.Fatalf("import of a pre-signed URL: %s %+v", done.Status, done.Error)
	}
	img, err := member.GetImage(ctx, "presigned")
	if err != nil {
		t.Fatal(err)
	}
	if want := srv.URL + "/disk.raw?X-Amz-Algorithm=REDACTED&X-Amz-Signature=REDACTED&private_token=REDACTED"; img.Source != want {
		t.Errorf("source = %q, want %q", img.Source, want)
	}
	// Failing ones: refused, missing, unreachable; told to a member and
	// to a superadmin.
	admin := e.super.WithProject("pa")
	for i, u := range []string{
		srv.URL + "/missing" + query,
		"http://" + closedPort(t) + "/x" + query,
		"http://169.254.169.254/x" + query,
		"http://localhost:1/x" + query,
	} {
		for _, c := range []*client.Client{member, admin} {
			done := waitDone(t, c)(c.ImportImageURL(ctx, api.ImageCreate{Name: fmt.Sprintf("bad-%d", i), URL: u}))
			if done.Status != api.OpFailed || done.Error == nil || strings.Contains(done.Error.Message, secret) {
				t.Errorf("import of %s: %s %+v", u, done.Status, done.Error)
			}
		}
	}
	// What an older server stored is rewritten at start.
	old := *img
	old.Name, old.UID = "stored-before", "uid-stored-before"
	old.Source = "https://user:" + secret + "@mirror.example/disk.raw" + query
	if _, err := e.s.images.Create(ctx, old.Key(), &old); err != nil {
		t.Fatal(err)
	}
	e.s.ctl.Imports.Recover(ctx)
	if got, _ := member.GetImage(ctx, "stored-before"); got == nil || strings.Contains(got.Source, secret) || !strings.HasPrefix(got.Source, "https://mirror.example/disk.raw?") {
		t.Errorf("stored source after a start: %+v", got)
	}
	if logs := e.logs.String(); strings.Contains(logs, secret) {
		t.Error("the server's log holds the URL's query")
	}
	ops, _ := e.super.ListAllOperations(ctx, api.ListOptions{AllProjects: true})
	for _, op := range ops {
		if strings.Contains(fmt.Sprint(op), secret) {
			t.Errorf("operation %s shows the query: %+v", op.ID, op.Error)
		}
	}
	recs, err := e.super.ListAudit(ctx, api.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprintf("%+v", recs), secret) {
		t.Error("the audit log holds the URL's query")
	}
	// The store's current values and the audit log; etcd's history of
	// the record written above is compacted away in time.
	if found := scanFiles(t, filepath.Join(e.dataDir, "audit"), []string{secret}); len(found) > 0 {
		t.Errorf("the query is stored: %v", found)
	}
	imgs, _ := e.super.ListAllImages(ctx, api.ListOptions{AllProjects: true})
	if strings.Contains(fmt.Sprintf("%+v", imgs), secret) {
		t.Error("an image record holds the URL's query")
	}
}

// TestImageVirtualSizeLimit: a tiny qcow2 that declares a 1 PiB disk is
// refused at once, before anything is converted, as an upload and from a
// URL; the limit is a setting.
func TestImageVirtualSizeLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", huge, "1P")
	b, _ := os.ReadFile(huge)
	member := e.as(api.RoleMember, "pa")
	before := e.imageFiles()
	_, err := member.UploadImage(ctx, "huge", api.ImageDisk, bytes.NewReader(b), int64(len(b)), nil)
	var se *client.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !strings.Contains(se.Error(), "virtual size of 1125899906842624 bytes is over the limit of 274877906944") {
		t.Fatalf("upload of a 1 PiB disk: %v, want 400 over the 256 GiB default", err)
	}
	if after := e.imageFiles(); len(after) != len(before) {
		t.Errorf("image store holds %v after the refusal, had %v", after, before)
	}

	web := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer web.Close()
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32"}, MaxVirtualBytes: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	done := waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "huge", URL: web.URL + "/huge.qcow2"}))
	if done.Status != api.OpFailed || !strings.Contains(done.Error.Message, "over the limit of 2097152") {
		t.Errorf("URL import of a 1 PiB disk: %s %+v", done.Status, done.Error)
	}
	// The setting applies to uploads too: 4 MiB is over 2 MiB.
	raw := make([]byte, 4<<20)
	if _, err := member.UploadImage(ctx, "four", api.ImageDisk, bytes.NewReader(raw), int64(len(raw)), nil); statusOfErr(err) != http.StatusBadRequest {
		t.Errorf("upload of 4 MiB under a 2 MiB limit: %v", err)
	}
}

// randomDisk is a raw disk of n bytes of random data.
func randomDisk(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestImageStorageQuota: a project's images count against its image
// storage quota, measured before anything is converted: an expansion
// bomb is refused at once, and two imports racing for the same room do
// not both get it.
func TestImageStorageQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	limit := int64(16)
	if _, err := e.super.SetQuota(ctx, "pa", api.Quota{ImageStorageMiB: &limit}); err != nil {
		t.Fatal(err)
	}
	member := e.as(api.RoleMember, "pa")
	q, err := member.GetQuota(ctx, "pa")
	if err != nil || q.Usage.ImageStorageMiB != 1 || *q.Limits.ImageStorageMiB != 16 {
		t.Fatalf("quota of pa: %+v %v, want the env's image in use (1 MiB)", q, err)
	}

	// 64 MiB of data compressed into a few hundred KiB.
	dir := t.TempDir()
	ones := filepath.Join(dir, "ones.raw")
	os.WriteFile(ones, bytes.Repeat([]byte{1}, 64<<20), 0o644)
	bomb := filepath.Join(dir, "bomb.qcow2")
	qemuImg(t, "convert", "-c", "-f", "raw", "-O", "qcow2", ones, bomb)
	b, _ := os.ReadFile(bomb)
	before := e.imageFiles()
	_, err = member.UploadImage(ctx, "bomb", api.ImageDisk, bytes.NewReader(b), int64(len(b)), nil)
	var se *client.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusUnprocessableEntity || se.Err.Details["quota"] != "imageStorageMiB" {
		t.Fatalf("upload of a %d-byte bomb: %v, want 422 over imageStorageMiB", len(b), err)
	}
	if after := e.imageFiles(); len(after) != len(before) {
		t.Errorf("image store holds %v after the refusal, had %v", after, before)
	}

	// Two 9 MiB disks race for 15 MiB of room: one gets it.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	ops := make([]*api.Operation, 2)
	for i := range 2 {
		wg.Go(func() {
			d := randomDisk(9<<20, uint64(i+1))
			ops[i], errs[i] = member.UploadImage(ctx, fmt.Sprintf("race-%d", i), api.ImageDisk, bytes.NewReader(d), int64(len(d)), nil)
		})
	}
	wg.Wait()
	var won int
	for i, err := range errs {
		switch statusOfErr(err) {
		case 0:
			won++
			if done := waitDone(t, member)(ops[i], nil); done.Status != api.OpSucceeded {
				t.Errorf("race-%d: %s %+v", i, done.Status, done.Error)
			}
		case http.StatusUnprocessableEntity:
		default:
			t.Errorf("race-%d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of two imports fit in room for one", won)
	}
	q, _ = member.GetQuota(ctx, "pa")
	if q.Usage.ImageStorageMiB < 10 || q.Usage.ImageStorageMiB > 16 {
		t.Errorf("usage after the import: %d MiB", q.Usage.ImageStorageMiB)
	}

	// From a URL, the quota is checked once the download is measured.
	web := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer web.Close()
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32"}}); err != nil {
		t.Fatal(err)
	}
	done := waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "bomb", URL: web.URL + "/bomb.qcow2"}))
	if done.Status != api.OpFailed || done.Error.Code != api.CodeUnprocessable || !strings.Contains(done.Error.Message, "quota") {
		t.Errorf("URL import over the quota: %s %+v", done.Status, done.Error)
	}
	if after := e.imageFiles(); len(after) != len(before)+1 {
		t.Errorf("image store holds %v, want one more image than %v", after, before)
	}
}

// TestImageImportSlots: a project runs at most the configured number of
// imports at once; more are refused with 429 before their upload is
// received, and other projects are not held up.
func TestImageImportSlots(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(internalDisk)))
		w.Write(internalDisk[:4096])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write(internalDisk[4096:])
	}))
	defer srv.Close()
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32"}, MaxImportsPerProject: 1}); err != nil {
		t.Fatal(err)
	}
	member := e.as(api.RoleMember, "pa")
	slow, err := member.ImportImageURL(ctx, api.ImageCreate{Name: "slow", URL: srv.URL + "/disk.raw"})
	if err != nil {
		t.Fatal(err)
	}
	small := make([]byte, 1<<20)
	_, err = member.UploadImage(ctx, "second", api.ImageDisk, bytes.NewReader(small), int64(len(small)), nil)
	var se *client.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusTooManyRequests || !strings.Contains(se.Error(), "already has 1 image imports running") {
		t.Fatalf("a second import while one runs: %v, want 429", err)
	}
	_, err = member.ImportImageURL(ctx, api.ImageCreate{Name: "third", URL: srv.URL + "/disk.raw"})
	if statusOfErr(err) != http.StatusTooManyRequests {
		t.Fatalf("a second URL import while one runs: %v, want 429", err)
	}
	// Another project has its own slots.
	other := e.super.WithProject("pb")
	if done := waitDone(t, other)(other.UploadImage(ctx, "elsewhere", api.ImageDisk, bytes.NewReader(small), int64(len(small)), nil)); done.Status != api.OpSucceeded {
		t.Fatalf("import in pb: %s %+v", done.Status, done.Error)
	}
	free()
	if done := waitDone(t, member)(slow, nil); done.Status != api.OpSucceeded {
		t.Fatalf("the slow import: %s %+v", done.Status, done.Error)
	}
	if done := waitDone(t, member)(member.UploadImage(ctx, "second", api.ImageDisk, bytes.NewReader(small), int64(len(small)), nil)); done.Status != api.OpSucceeded {
		t.Fatalf("an import once the slot is free: %s %+v", done.Status, done.Error)
	}

	// A cancelled import frees its slot and leaves nothing behind.
	before := e.imageFiles()
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(internalDisk)))
		w.Write(internalDisk[:4096])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer stalled.Close()
	op, err := member.ImportImageURL(ctx, api.ImageCreate{Name: "stalled", URL: stalled.URL + "/disk.raw"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := member.CancelOperation(ctx, op.ID); err != nil {
		t.Fatalf("cancelling the import: %v", err)
	}
	if done := waitDone(t, member)(op, nil); done.Status != api.OpCancelled {
		t.Fatalf("the cancelled import: %s %+v", done.Status, done.Error)
	}
	// Bytes of its own, so that its file is not one the store holds
	// already (images with the same bytes share one).
	third := make([]byte, 1<<20)
	crand.Read(third)
	if done := waitDone(t, member)(member.UploadImage(ctx, "third", api.ImageDisk, bytes.NewReader(third), int64(len(third)), nil)); done.Status != api.OpSucceeded {
		t.Fatalf("an import after a cancelled one: %s %+v", done.Status, done.Error)
	}
	if after := e.imageFiles(); len(after) != len(before)+1 {
		t.Errorf("image store holds %v, want one more image than %v", after, before)
	}
	if q, _ := member.GetQuota(ctx, "pa"); q == nil || q.Usage.ImageStorageMiB > 4 {
		t.Errorf("image storage after the imports: %+v, want no reservation left", q)
	}
}

// TestImagePublicVisibility: a superadmin makes an image of the default
// project public; VMs of other projects then use it by name, their hosts
// fetch it, and it shows in their lists. Nobody else may change it, and
// the change is audited.
func TestImagePublicVisibility(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	e.importImage(ctx, api.DefaultProject, "shared-disk")
	member := e.as(api.RoleMember, "pa")
	create := func(name string) error {
		_, err := member.CreateVM(ctx, api.VMCreate{Name: name, VCPUs: 1, MemoryMiB: 128, Host: "h1",
			Disks: []api.Disk{{Image: "shared-disk"}}}, client.CreateOptions{})
		return err
	}
	if err := create("before"); statusOfErr(err) != http.StatusBadRequest {
		t.Fatalf("a VM of pa on a private image of default: %v, want 400", err)
	}
	if _, err := member.GetImage(ctx, "shared-disk"); statusOfErr(err) != http.StatusNotFound {
		t.Fatalf("member of pa reading a private image of default: %v", err)
	}
	public, private := true, false
	for _, who := range []string{api.RoleMember, api.RoleAdmin, "bob"} {
		if _, err := e.as(who, api.DefaultProject).UpdateImage(ctx, "shared-disk", api.ImageUpdate{Public: &public}); statusOfErr(err) != http.StatusForbidden {
			t.Errorf("%s making an image public: %v, want 403", who, err)
		}
	}
	img, err := e.super.WithProject(api.DefaultProject).UpdateImage(ctx, "shared-disk", api.ImageUpdate{Public: &public})
	if err != nil || !img.Public {
		t.Fatalf("superadmin making it public: %+v %v", img, err)
	}

	if got, err := member.GetImage(ctx, "shared-disk"); err != nil || got.Project != api.DefaultProject || !got.Public {
		t.Errorf("member of pa reading the public image: %+v %v", got, err)
	}
	list, _ := member.ListAllImages(ctx, api.ListOptions{})
	var listed bool
	for _, i := range list {
		listed = listed || i.Name == "shared-disk" && i.Public
	}
	if !listed {
		t.Errorf("pa's image list lacks the public image: %+v", list)
	}
	if err := create("uses-shared"); err != nil {
		t.Fatalf("a VM of pa on the public image: %v", err)
	}
	vm, err := member.GetVM(ctx, "uses-shared")
	if err != nil || vm.Spec.Disks[0].Image != "default/shared-disk" {
		t.Fatalf("vm: %+v %v", vm, err)
	}
	// The VM's host may fetch it.
	body, _, err := e.client(e.tokens["h1"], "").AgentImageContent(ctx, "default/shared-disk")
	if err != nil {
		t.Fatalf("h1 fetching the public image its VM uses: %v", err)
	}
	body.Close()

	recs, err := e.super.ListAudit(ctx, api.AuditQuery{Action: "image.update"})
	if err != nil {
		t.Fatal(err)
	}
	var ok, denied int
	for _, r := range recs {
		switch {
		case r.Outcome == api.AuditSuccess && r.Message == "visibility private -> public" && r.Resource.Name == "shared-disk":
			ok++
		case r.Outcome == api.AuditDenied:
			denied++
		}
	}
	if ok != 1 || denied != 3 {
		t.Errorf("audit of image.update: %d changes, %d refusals; want 1 and 3: %+v", ok, denied, recs)
	}

	// Private again: no new VM of pa uses it; the one that does keeps it,
	// and holds it from deletion.
	if _, err := e.super.WithProject(api.DefaultProject).UpdateImage(ctx, "shared-disk", api.ImageUpdate{Public: &private}); err != nil {
		t.Fatal(err)
	}
	if err := create("after"); statusOfErr(err) != http.StatusBadRequest {
		t.Errorf("a VM of pa on the image made private: %v, want 400", err)
	}
	if _, err := member.GetVM(ctx, "uses-shared"); err != nil {
		t.Errorf("the VM on the image made private: %v", err)
	}
	if _, err := e.super.WithProject(api.DefaultProject).DeleteImage(ctx, "shared-disk"); statusOfErr(err) != http.StatusConflict {
		t.Errorf("deleting the image a VM of pa uses: %v, want 409", err)
	}
	if _, err := e.super.WithProject(api.DefaultProject).UpdateImage(ctx, "shared-disk", api.ImageUpdate{}); statusOfErr(err) != http.StatusBadRequest {
		t.Errorf("an empty update: %v, want 400", err)
	}
}
