package images

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// countingServer is a real HTTP server on loopback that counts the
// requests it gets and answers a secret.
func countingServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("internal secret, 512 bytes long" + strings.Repeat(".", 512-31)))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func portOf(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// TestFetchRefusesNonPublic: with the default policy, every way of
// writing a loopback, private, link-local, metadata, multicast or
// otherwise non-public destination is refused on the connection, after
// name resolution, and the refusal names neither the address nor the
// port. The loopback server never sees a request.
func TestFetchRefusesNonPublic(t *testing.T) {
	srv, hits := countingServer(t)
	port := portOf(t, srv)
	urls := []string{
		"http://127.0.0.1:" + port + "/secret",
		"http://localhost:" + port + "/secret", // a name: refused once resolved
		"http://[::1]:" + port + "/secret",
		"http://[::ffff:127.0.0.1]:" + port + "/secret", // IPv4-mapped
		"http://[::ffff:7f00:1]:" + port + "/secret",
		"http://[64:ff9b::7f00:1]:" + port + "/secret", // NAT64 of 127.0.0.1
		"http://[2002:7f00:1::1]:" + port + "/secret",  // 6to4 of 127.0.0.1
		"http://0.0.0.0:" + port + "/secret",           // reaches loopback on Linux
		"http://[::]:" + port + "/secret",
		"http://127.1.2.3:" + port + "/secret",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fd00:ec2::254]/latest/meta-data/",
		"http://[::ffff:169.254.169.254]/latest/meta-data/",
		"http://168.63.129.16/machine",
		"http://100.100.100.200/latest/meta-data/",
		"http://10.1.2.3:22/",
		"http://172.16.0.1/",
		"http://192.168.1.1/",
		"http://100.64.0.1/",
		"http://[fd12:3456::1]/",
		"http://[fe80::1%25lo]/",
		"http://224.0.0.1/",
		"http://[ff02::1]/",
		"http://255.255.255.255/",
		"http://240.0.0.1/",
		"http://198.18.0.1/",
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "src")
			_, err := Fetch(context.Background(), u, dst, nil)
			var dest *DestinationError
			if !errors.As(err, &dest) {
				t.Fatalf("Fetch = %v, want a refused destination", err)
			}
			msg := err.Error()
			if IsReject(err) || !strings.Contains(msg, "does not fetch from there") {
				// A refusal fails as a connection that failed.
				t.Errorf("message %q (%T): want the failure of a connection that failed", msg, err)
			}
			// The message repeats the URL the user gave, nothing more:
			// not the address it resolved to.
			rest := strings.Replace(msg, u, "", 1)
			if strings.Contains(rest, dest.Addr.String()) || strings.Contains(rest, dest.What) {
				t.Errorf("message %q tells the address or its kind", msg)
			}
			if d := Detail(err); !strings.Contains(d, dest.Addr.String()) || !strings.Contains(d, dest.What) {
				t.Errorf("detail %q does not name the address and its kind", d)
			}
			assertNothingLeft(t, dst)
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests", n)
	}
}

// TestFetchNoPortScanOracle: a fetch from an open port, a closed port, a
// path that answers 404 and an unused address of a refused network all
// answer the same message, the URL aside.
func TestFetchNoPortScanOracle(t *testing.T) {
	srv, hits := countingServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	var msgs []string
	for _, u := range []string{
		srv.URL + "/secret", srv.URL + "/missing", "http://" + closed + "/secret", "http://10.255.255.1:8443/x",
	} {
		_, err := Fetch(context.Background(), u, filepath.Join(t.TempDir(), "src"), nil)
		if err == nil {
			t.Fatalf("Fetch %s succeeded", u)
		}
		msgs = append(msgs, strings.Replace(err.Error(), u, "URL", 1))
	}
	for _, m := range msgs[1:] {
		if m != msgs[0] {
			t.Errorf("messages differ:\n%s\n%s", msgs[0], m)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("the loopback server got %d requests", hits.Load())
	}
}

// TestFetchRedirectChecked: a redirect from an allowed host to a refused
// address is refused on its own connection.
func TestFetchRedirectChecked(t *testing.T) {
	internal, hits := countingServer(t)
	port := portOf(t, internal)
	var frontHits atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		frontHits.Add(1)
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	}))
	defer front.Close()
	// The front server is allowed by its name only.
	allowed := strings.Replace(front.URL, "127.0.0.1", "localhost", 1)
	policy := WithPolicy(FetchPolicy{AllowHosts: []string{"localhost"}})
	targets := []string{
		"http://127.0.0.1:" + port + "/secret",
		"http://[::ffff:127.0.0.1]:" + port + "/secret",
		"http://169.254.169.254/latest/meta-data/",
	}
	for _, to := range targets {
		dst := filepath.Join(t.TempDir(), "src")
		_, err := Fetch(context.Background(), allowed+"/?to="+url.QueryEscape(to), dst, nil, policy)
		var dest *DestinationError
		if !errors.As(err, &dest) {
			t.Fatalf("redirect to %s: Fetch = %v, want a refused destination", to, err)
		}
		assertNothingLeft(t, dst)
	}
	if n := frontHits.Load(); n != int64(len(targets)) {
		t.Fatalf("the allowed front server got %d requests, want %d", n, len(targets))
	}
	if hits.Load() != 0 {
		t.Fatalf("the internal server got %d requests through redirects", hits.Load())
	}
}

// TestFetchAllowList: networks and hosts a superadmin allows are
// reached; the metadata addresses never are.
func TestFetchAllowList(t *testing.T) {
	srv, hits := countingServer(t)
	port := portOf(t, srv)
	for _, tc := range []struct {
		name   string
		policy FetchPolicy
		url    string
	}{
		{"network", FetchPolicy{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, "http://127.0.0.1:" + port + "/x"},
		{"host", FetchPolicy{AllowHosts: []string{"localhost"}}, "http://localhost:" + port + "/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Fetch(context.Background(), tc.url, filepath.Join(t.TempDir(), "src"), nil, WithPolicy(tc.policy))
			if err != nil || n != 512 {
				t.Fatalf("Fetch = %d, %v", n, err)
			}
		})
	}
	if hits.Load() == 0 {
		t.Fatal("the allowed server got no request")
	}
	wild := FetchPolicy{AllowHosts: []string{"*.example.com"}}
	for host, want := range map[string]bool{"a.example.com": true, "A.B.Example.COM.": true, "example.com": false, "badexample.com": false} {
		if _, err := wild.check(host, netip.MustParseAddr("10.0.0.1")); (err == nil) != want {
			t.Errorf("*.example.com allows %s: %v, want %v", host, err == nil, want)
		}
	}
	// An allowed network or host does not open the metadata service.
	p := FetchPolicy{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("::/0")},
		AllowHosts: []string{"169.254.169.254"}}
	for _, ip := range []string{"169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "64:ff9b::a9fe:a9fe"} {
		if _, err := p.check("metadata", netip.MustParseAddr(ip)); err == nil {
			t.Errorf("%s allowed by %+v", ip, p)
		}
	}
}

func TestClassify(t *testing.T) {
	for ip, want := range map[string]string{
		"8.8.8.8":              "",
		"1.1.1.1":              "",
		"2606:4700::1111":      "",
		"64:ff9b::808:808":     "", // NAT64 of a public address
		"2002:808:808::1":      "",
		"127.0.0.1":            "loopback",
		"::ffff:127.0.0.1":     "loopback",
		"::1":                  "loopback",
		"0.0.0.0":              "unspecified",
		"::":                   "unspecified",
		"10.0.0.1":             "private",
		"::ffff:10.0.0.1":      "private",
		"172.31.255.255":       "private",
		"192.168.0.1":          "private",
		"fd00::1":              "unique local",
		"100.127.0.1":          "shared (CGNAT)",
		"169.254.1.1":          "link-local",
		"fe80::1":              "link-local",
		"224.0.0.251":          "multicast",
		"ff05::2":              "multicast",
		"255.255.255.255":      "broadcast",
		"64:ff9b::a00:1":       "private",
		"2002:c0a8:101::1":     "private",
		"2001:db8::1":          "documentation",
		"2001:0:4136:e378::1":  "reserved", // Teredo
		"::127.0.0.1":          "reserved", // IPv4-compatible
		"100::1":               "reserved",
		"4000::1":              "reserved", // outside global unicast
		"fe80::1%eth0":         "link-local",
		"::ffff:169.254.169.1": "link-local",
	} {
		if got := classify(netip.MustParseAddr(ip)); got != want {
			t.Errorf("classify(%s) = %q, want %q", ip, got, want)
		}
	}
}

func TestParseAllowHost(t *testing.T) {
	for in, want := range map[string]string{"Mirror.Internal.": "mirror.internal", "*.example.com": "*.example.com", "a_b.lan": "a_b.lan"} {
		if got, err := ParseAllowHost(in); err != nil || got != want {
			t.Errorf("ParseAllowHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "*.", "10.0.0.1", "::1", "a..b", "-a.b", "a b", "a/b", "http://x"} {
		if got, err := ParseAllowHost(in); err == nil {
			t.Errorf("ParseAllowHost(%q) = %q, want an error", in, got)
		}
	}
}

// TestFetchNamesTellNothing: a host name that resolves to a refused
// address fails with the same error, and the same kind of error, as one
// that does not resolve at all, so that a tenant cannot map the names of
// the server's network; only Detail, for administrators, tells them
// apart.
func TestFetchNamesTellNothing(t *testing.T) {
	srv, hits := countingServer(t)
	port := portOf(t, srv)
	internal := "http://localhost:" + port + "/secret"           // resolves to loopback
	missing := "http://no-such-host.invalid:" + port + "/secret" // does not resolve
	var errs []error
	for _, u := range []string{internal, missing} {
		_, err := Fetch(context.Background(), u, filepath.Join(t.TempDir(), "src"), nil)
		if err == nil {
			t.Fatalf("Fetch %s succeeded", u)
		}
		errs = append(errs, err)
	}
	a := strings.Replace(errs[0].Error(), "localhost", "HOST", 1)
	b := strings.Replace(errs[1].Error(), "no-such-host.invalid", "HOST", 1)
	if a != b {
		t.Errorf("a name of an internal address and a name that does not resolve fail differently:\n%s\n%s", a, b)
	}
	if IsReject(errs[0]) != IsReject(errs[1]) {
		t.Errorf("the two failures are of different kinds: %T, %T", errs[0], errs[1])
	}
	var dest *DestinationError
	if !errors.As(errs[0], &dest) || !strings.Contains(Detail(errs[0]), "127.0.0.1") {
		t.Errorf("the detail of the refused name does not tell the address: %s", Detail(errs[0]))
	}
	if d := Detail(errs[1]); !strings.Contains(d, "no such host") {
		t.Errorf("the detail of the missing name does not say it does not resolve: %s", d)
	}
	if hits.Load() != 0 {
		t.Fatalf("the loopback server got %d requests", hits.Load())
	}
}

// ownAddrs lists this machine's addresses that are neither loopback nor
// link-local (those need a zone in a URL), each with the network of its
// interface.
func ownAddrs(t *testing.T) map[netip.Addr]netip.Prefix {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Addr]netip.Prefix{}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := n.Mask.Size()
		out[ip] = netip.PrefixFrom(ip, ones).Masked()
	}
	return out
}

// TestFetchRefusesOwnAddresses: a real HTTP server bound to every address
// of this machine is not reached through any address of its interfaces,
// even where the installation allows the network it is on (its LAN, for a
// mirror); only an allow-list entry of that one address opens it.
func TestFetchRefusesOwnAddresses(t *testing.T) {
	own := ownAddrs(t)
	if len(own) == 0 {
		t.Skip("this machine has no address but loopback and link-local ones")
	}
	var hits atomic.Int64
	l, err := net.Listen("tcp", ":0") // every address, as services often are
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("the server's own secret"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port
	for ip, lan := range own {
		u := "http://" + netip.AddrPortFrom(ip, uint16(port)).String() + "/secret.txt"
		t.Run(ip.String(), func(t *testing.T) {
			for _, p := range []FetchPolicy{{}, {AllowNetworks: []netip.Prefix{lan}}} {
				before := hits.Load()
				_, err := Fetch(context.Background(), u, filepath.Join(t.TempDir(), "src"), nil, WithPolicy(p))
				var dest *DestinationError
				if !errors.As(err, &dest) {
					t.Fatalf("policy %v: Fetch = %v, want a refused destination", p.AllowNetworks, err)
				}
				if hits.Load() != before {
					t.Fatalf("policy %v: the server got the request", p.AllowNetworks)
				}
			}
			// A superadmin may open the one address.
			one := FetchPolicy{AllowNetworks: []netip.Prefix{netip.PrefixFrom(ip, ip.BitLen())}}
			if n, err := Fetch(context.Background(), u, filepath.Join(t.TempDir(), "src"), nil, WithPolicy(one)); err != nil || n == 0 {
				t.Fatalf("allowed as %s: Fetch = %d, %v", one.AllowNetworks[0], n, err)
			}
		})
	}
}

// TestOwnAddressesRefused: the server's own addresses are refused even
// when public, in every form that reaches them, and opened by an allowed
// host name or a network of that one address only.
func TestOwnAddressesRefused(t *testing.T) {
	ownList := func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("2606:4700::1111")}, nil
	}
	p := FetchPolicy{ownAddrs: ownList}
	for _, ip := range []string{"8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"} {
		_, err := p.check("public.example", netip.MustParseAddr(ip))
		var dest *DestinationError
		if !errors.As(err, &dest) || dest.What != ownAddress || !strings.Contains(dest.Error(), "an address of this server") {
			t.Errorf("%s: check = %v, want refused as the server's own", ip, err)
		}
	}
	if _, err := p.check("public.example", netip.MustParseAddr("8.8.4.4")); err != nil {
		t.Errorf("another public address: %v", err)
	}
	wide := FetchPolicy{ownAddrs: ownList, AllowNetworks: []netip.Prefix{netip.MustParsePrefix("8.8.8.0/24")}}
	if _, err := wide.check("x", netip.MustParseAddr("8.8.8.8")); err == nil {
		t.Error("a network around the server's address opened it")
	}
	for _, open := range []FetchPolicy{
		{ownAddrs: ownList, AllowNetworks: []netip.Prefix{netip.MustParsePrefix("8.8.8.8/32")}},
		{ownAddrs: ownList, AllowHosts: []string{"self.example"}},
	} {
		if internal, err := open.check("self.example", netip.MustParseAddr("8.8.8.8")); err != nil || !internal {
			t.Errorf("allowed by %v %v: check = %v, %v; want allowed, and its answers hidden", open.AllowNetworks, open.AllowHosts, internal, err)
		}
	}
	failing := FetchPolicy{ownAddrs: func() ([]netip.Addr, error) { return nil, errors.New("no netlink") }}
	if _, err := failing.check("x", netip.MustParseAddr("8.8.4.4")); err == nil {
		t.Error("a server that cannot list its addresses connects anyway")
	}
}
