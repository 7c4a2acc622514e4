package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/polyvisor/polyvisor/api"
)

// openPTY opens a pseudo-terminal in raw mode: what is written to tty
// is read from pty as it was written.
func openPTY(t *testing.T) (pty, tty *os.File) {
	t.Helper()
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { pty.Close() })
	if err := unix.IoctlSetPointerInt(int(pty.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(pty.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("naming the pseudo-terminal: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the terminal side: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
		t.Fatalf("making the terminal raw: %v", err)
	}
	return pty, tty
}

// onTerminal runs the command line with its output on a terminal and
// returns what reached the terminal.
func onTerminal(t *testing.T, args ...string) string {
	t.Helper()
	pty, tty := openPTY(t)
	got := make(chan []byte, 1)
	go func() {
		// Reading ends with EIO once the terminal side is closed.
		b, _ := io.ReadAll(pty)
		got <- b
	}()
	var errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := run(ctx, NewRootCommand(), args, strings.NewReader(""), tty, &errOut)
	tty.Close()
	if code != ExitOK {
		t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
	}
	select {
	case b := <-got:
		return string(b)
	case <-ctx.Done():
		t.Fatal("the terminal's output did not end")
		return ""
	}
}

// TestConsoleLogOnTerminal: a guest's serial output holding escape
// sequences reaches a terminal escaped, its CRLF line ends as newlines;
// with --raw, and when piped, it is written as recorded.
func TestConsoleLogOnTerminal(t *testing.T) {
	isolate(t)
	f := newFake(t)
	const serial = "boot\r\n" + hostile + "\r\nlogin: "
	f.HandleFunc("GET /v1/vms/{name}/console/log", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, serial)
	})
	args := []string{"--server", f.srv.URL, "vm", "console-log", "web1"}

	out := onTerminal(t, args...)
	assertTerminalSafe(t, "console-log on a terminal", out)
	if want := "boot\n" + termSafe(hostile, false) + "\nlogin: "; out != want {
		t.Errorf("console-log on a terminal wrote\n%q\nwant\n%q", out, want)
	}

	if out := onTerminal(t, append(args, "--raw")...); out != serial {
		t.Errorf("console-log --raw on a terminal wrote\n%q\nwant the bytes as recorded", out)
	}
	if out, errOut, code := cli(t, "", args...); code != ExitOK || out != serial {
		t.Errorf("console-log piped: exit %d %s, wrote\n%q\nwant the bytes as recorded", code, errOut, out)
	}
}

// TestProgressLinesAreTerminalSafe: a provider's status message (told by
// the remote platform) and an operation's message are escaped in the
// progress lines the CLI prints while it waits.
func TestProgressLinesAreTerminalSafe(t *testing.T) {
	isolate(t)
	providerPollInterval = time.Millisecond
	f := newFake(t)
	var polls atomic.Int32
	f.HandleFunc("POST /v1/providers", func(w http.ResponseWriter, r *http.Request) {
		p := testProvider("kvm7", api.ProviderConnecting)
		p.Status.Message = "connecting " + hostile
		reply(w, http.StatusCreated, p)
	})
	f.HandleFunc("GET /v1/providers/{name}", func(w http.ResponseWriter, r *http.Request) {
		p := testProvider("kvm7", api.ProviderConnecting)
		p.Status.Message = fmt.Sprintf("try %d %s", polls.Add(1), hostile)
		if polls.Load() > 2 {
			p = testProvider("kvm7", api.ProviderConnected)
		}
		reply(w, http.StatusOK, p)
	})
	out, errOut, code := cli(t, "", "--server", f.srv.URL, "provider", "add", "libvirt", "kvm7", "--uri", "qemu+tcp://kvm7.example.com/system")
	if code != ExitOK {
		t.Fatalf("provider add: exit %d: %s", code, errOut)
	}
	assertTerminalSafe(t, "provider add's progress", out+errOut)
	if !strings.Contains(out+errOut, `try 1 \x1b]0;pwned`) {
		t.Errorf("provider add does not show the escaped message:\n%s\n%s", out, errOut)
	}

	var buf bytes.Buffer
	p := &opProgress{w: &buf}
	p.update(&api.Operation{Kind: api.OpImageImport, Target: api.Ref{Kind: "image", Name: "img"}, Status: api.OpRunning, Progress: 40,
		Message: hostile})
	assertTerminalSafe(t, "an operation's progress", buf.String())
	if !strings.Contains(buf.String(), `40% - \x1b]0;pwned`) {
		t.Errorf("the progress line does not show the escaped message: %q", buf.String())
	}
}
