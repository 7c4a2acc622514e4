package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/server"
)

// hostile is text another user controls, made to drive a terminal: set
// its title, clear it, color it, reverse the text that follows, move to
// the start of the line and write over it, and an 8-bit CSI.
const hostile = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u202eevil\rfake\u009b1m\x7fend"

// assertTerminalSafe fails the test if out holds a character that acts
// on a terminal.
func assertTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		if r == utf8.RuneError && !strings.HasPrefix(out[i:], "\uFFFD") || unsafeRune(r) {
			t.Errorf("%s holds %U at byte %d:\n%q", what, r, i, out)
			return
		}
	}
}

// TestCLIOutputIsTerminalSafe: a project description and an audit record
// (the path of a request naming a VM) holding escape sequences are printed
// escaped in tables and show output, and exact in JSON and YAML, which
// write them as escapes of their own; an error naming them is escaped too.
func TestCLIOutputIsTerminalSafe(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(client.Config{URL: "unix://" + rs.socket})
	if err != nil {
		t.Fatal(err)
	}
	desc := "team " + hostile
	if _, err := c.CreateProject(ctx, api.ProjectCreate{Name: "evil", Description: desc}); err != nil {
		t.Fatalf("creating a project with a hostile description: %v", err)
	}
	// A request naming a VM whose name holds the sequence: refused, and
	// recorded in the audit log with that name.
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, "http://pv/v1/vms/x"+url.PathEscape(hostile)+"?project=evil", nil)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", rs.socket)
	}}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	recs, err := c.ListAudit(ctx, api.AuditQuery{Project: "evil"})
	if err != nil || !strings.Contains(auditText(recs), "\x1b]0;pwned") {
		t.Fatalf("the audit log does not hold the hostile request (%d records, %v)", len(recs), err)
	}

	for _, args := range [][]string{
		{"project", "show", "evil"},
		{"project", "list"},
		{"audit", "list", "--project", "evil"},
	} {
		out, errOut, code := cli(t, "", rs.asRoot(args...)...)
		if code != ExitOK {
			t.Fatalf("%v: exit %d\n%s", args, code, errOut)
		}
		assertTerminalSafe(t, strings.Join(args, " "), out)
		if !strings.Contains(out, `\x1b]0;pwned\x07\x1b[2J`) || !strings.Contains(out, `\u202eevil\rfake\u009b1m\x7fend`) {
			t.Errorf("%v does not show the escaped text:\n%s", args, out)
		}
		if strings.Contains(out, "\nfake") {
			t.Errorf("%v: a value started a line of its own:\n%s", args, out)
		}

		// JSON and YAML: the same values, exactly, and nothing raw.
		out, _, _ = cli(t, "", rs.asRoot(append([]string{"-o", "json"}, args...)...)...)
		assertTerminalSafe(t, strings.Join(args, " ")+" -o json", out)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil || !strings.Contains(deepText(v), hostile) {
			t.Errorf("%v -o json does not hold the values exactly (%v):\n%s", args, err, out)
		}
		out, _, _ = cli(t, "", rs.asRoot(append([]string{"-o", "yaml"}, args...)...)...)
		assertTerminalSafe(t, strings.Join(args, " ")+" -o yaml", out)
		v = nil
		if err := yaml.Unmarshal([]byte(out), &v); err != nil || !strings.Contains(deepText(v), hostile) {
			t.Errorf("%v -o yaml does not hold the values exactly (%v):\n%s", args, err, out)
		}
	}

	// An error that names what the user typed, or the server echoes.
	_, errOut, code := cli(t, "", rs.asRoot("--project", "evil", "vm", "show", "x"+hostile)...)
	if code == ExitOK {
		t.Fatal("vm show of a missing VM succeeded")
	}
	assertTerminalSafe(t, "the error", errOut)
	if !strings.Contains(errOut, `\x1b]0;pwned`) {
		t.Errorf("the error does not show the escaped name:\n%s", errOut)
	}
}

// auditText is the records' resources and paths.
func auditText(recs []api.AuditRecord) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString(r.Path + " " + r.Resource.Name + "\n")
	}
	return b.String()
}

// deepText gathers every string of a decoded JSON or YAML value.
func deepText(v any) string {
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			b.WriteString(x + "\n")
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				b.WriteString(k + "\n")
				walk(e)
			}
		}
	}
	walk(v)
	return b.String()
}

// TestTermSafe: what is escaped, what is kept.
func TestTermSafe(t *testing.T) {
	for _, tc := range []struct {
		in            string
		oneLine, want string
		multi         string
	}{
		{in: "plain ascii", oneLine: "plain ascii", multi: "plain ascii"},
		{in: "héllo 世界 👩‍👩‍👧 ñ", oneLine: "héllo 世界 👩‍👩‍👧 ñ", multi: "héllo 世界 👩‍👩‍👧 ñ"},
		{in: "a\tb\nc", oneLine: `a\tb\nc`, multi: "a\tb\nc"},
		{in: "\x1b[31mred\x1b[0m", oneLine: `\x1b[31mred\x1b[0m`, multi: `\x1b[31mred\x1b[0m`},
		{in: "over\rwrite\x08\x07", oneLine: `over\rwrite\x08\x07`, multi: `over\rwrite\x08\x07`},
		{in: "c1 \u009b2J \u0085", oneLine: `c1 \u009b2J \u0085`, multi: `c1 \u009b2J \u0085`},
		{in: "bidi \u202eabc\u2066\u2069", oneLine: `bidi \u202eabc\u2066\u2069`, multi: `bidi \u202eabc\u2066\u2069`},
		{in: "bad \xff\xfe utf8", oneLine: `bad \xff\xfe utf8`, multi: `bad \xff\xfe utf8`},
		{in: "sep\u2028x", oneLine: `sep\u2028x`, multi: `sep\u2028x`},
		{in: "real \uFFFD kept", oneLine: "real \uFFFD kept", multi: "real \uFFFD kept"},
	} {
		if got := termSafe(tc.in, true); got != tc.oneLine {
			t.Errorf("termSafe(%q, oneLine) = %q, want %q", tc.in, got, tc.oneLine)
		}
		if got := termSafe(tc.in, false); got != tc.multi {
			t.Errorf("termSafe(%q) = %q, want %q", tc.in, got, tc.multi)
		}
	}
	if got := consoleSafe([]byte("boot\r\n\x1b[1mOK\x1b[0m\r\n")); got != "boot\n\\x1b[1mOK\\x1b[0m\n" {
		t.Errorf("consoleSafe = %q", got)
	}
	// A stream of JSON split in the middle of a character.
	var out bytes.Buffer
	js := &jsonSafeWriter{w: &out}
	in := []byte(`{"a":"x` + "\u009b\u202e" + `y"}` + "\n")
	for i := range in {
		js.Write(in[i : i+1])
	}
	js.Close()
	if want := `{"a":"x\u009b\u202ey"}` + "\n"; out.String() != want {
		t.Errorf("jsonSafeWriter wrote %q, want %q", out.String(), want)
	}
	// Tables: a cell stays in its column.
	var tbl bytes.Buffer
	a := &app{}
	a.print(&tbl, nil, func(tw *tabwriter.Writer) {
		row(tw, "NAME", "DESCRIPTION")
		row(tw, "p1", "one\ttwo\nthree")
	})
	if lines := strings.Split(strings.TrimSpace(tbl.String()), "\n"); len(lines) != 2 || !strings.Contains(lines[1], `one\ttwo\nthree`) {
		t.Errorf("table:\n%s", tbl.String())
	}
}
