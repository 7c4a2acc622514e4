package cli

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/polyvisor/polyvisor/internal/daemon"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = "../.."

// readmeCommand is a polyvisor command line of the README.
type readmeCommand struct {
	line  string // as written, continuation lines joined
	args  []string
	stdin string // a <<< here-string
}

// readmeCommands returns the polyvisor commands of the README's sh blocks
// between the heading that starts with section and the next heading (all
// of them for ""), in order.
func readmeCommands(t *testing.T, section string) []readmeCommand {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []readmeCommand
	in, block := section == "", false
	var pending string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		if !block && strings.HasPrefix(line, "#") {
			level := len(line) - len(strings.TrimLeft(line, "#"))
			title := strings.TrimSpace(line[level:])
			switch {
			case section != "" && strings.HasPrefix(title, section):
				in = true
			case section != "" && in:
				in = false // the section's own text ends at the next heading
			}
			continue
		}
		if strings.HasPrefix(line, "```") {
			block = !block && strings.TrimPrefix(line, "```") == "sh"
			continue
		}
		if !block || !in {
			continue
		}
		if s, ok := strings.CutSuffix(strings.TrimRight(line, " "), "\\"); ok {
			pending += s + " "
			continue
		}
		line, pending = pending+line, ""
		if !strings.HasPrefix(line, "polyvisor ") {
			continue
		}
		c := readmeCommand{line: line}
		words := shellWords(t, line)
		for i, w := range words {
			if w == "<<<" && i+1 < len(words) {
				c.stdin = words[i+1] + "\n"
				words = words[:i]
				break
			}
		}
		for _, w := range words[1:] {
			if w != "..." { // an elided part of the command
				c.args = append(c.args, w)
			}
		}
		cmds = append(cmds, c)
	}
	if len(cmds) == 0 {
		t.Fatalf("no polyvisor commands under %q in README.md", section)
	}
	return cmds
}

// shellWords splits a command line as sh would for the README's simple
// lines: quotes, and a comment from an unquoted #.
func shellWords(t *testing.T, line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	quote := rune(0)
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == '#' && !inWord:
			return words
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("README line with an open quote: %s", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// Every polyvisor command the README shows names commands and flags that
// exist, with the arguments they take.
func TestReadmeCommandsParse(t *testing.T) {
	cmds := readmeCommands(t, "")
	if len(cmds) < 30 {
		t.Errorf("found only %d polyvisor commands in README.md", len(cmds))
	}
	for _, c := range cmds {
		root := NewRootCommand(daemon.ServerCommand(), daemon.AgentCommand())
		cmd, rest, err := root.Find(c.args)
		if err != nil {
			t.Errorf("README: %s: %v", c.line, err)
			continue
		}
		if cmd == root || cmd.RunE == nil && cmd.Run == nil {
			t.Errorf("README: %s: names no command", c.line)
			continue
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Errorf("README: %s: %v", c.line, flagError(cmd, err))
			continue
		}
		if cmd.Args != nil {
			if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
				t.Errorf("README: %s: %v", c.line, err)
			}
		}
	}
}

// The cloud-init example the README points at is cloud-config user-data.
func TestCloudInitExampleIsCloudConfig(t *testing.T) {
	path := filepath.Join(repoRoot, "docs", "examples", "cloud-init.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "#cloud-config\n") {
		t.Errorf("%s does not start with #cloud-config, which cloud-init needs to read it as cloud-config", path)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s is not YAML: %v", path, err)
	}
	for _, key := range []string{"write_files", "runcmd"} {
		if doc[key] == nil {
			t.Errorf("%s has no %s", path, key)
		}
	}
	if len(b) > 64<<10 {
		t.Errorf("%s is larger than the server accepts", path)
	}
	if out, err := exec.Command("cloud-init", "schema", "--config-file", path).CombinedOutput(); err == nil {
		t.Logf("cloud-init schema: %s", out)
	} else if _, lookErr := exec.LookPath("cloud-init"); lookErr == nil {
		t.Errorf("cloud-init schema --config-file %s: %v\n%s", path, err, out)
	}
}

// The commands of the README's "Using it" section work, as written,
// against a real server with its built-in agent and QEMU, in a directory
// laid out as the repository is.
func TestReadmeUsingItWorks(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	isolate(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "pv.sock")

	// polyvisor server, with its built-in agent.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, NewRootCommand(daemon.ServerCommand()), []string{"server", "--data-dir", filepath.Join(dir, "data"),
			"--listen", "127.0.0.1:0", "--socket", sock, "--host-name", "readme", "--log-level", "warn"},
			strings.NewReader(""), io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the server did not stop")
		}
	})
	t.Setenv(envServer, "unix://"+sock)
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, _ := cli(t, "", "host", "list")
		if strings.Contains(out, " ready ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's host is not ready:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// What the quickstart imports.
	for _, im := range []struct{ name, kind, file string }{
		{"tiny-kernel", "kernel", g.Kernel}, {"tiny-initrd", "initrd", g.Initrd}, {"tiny-disk", "disk", g.Disk},
	} {
		if _, errOut, code := cli(t, "", "image", "import", im.file, "--name", im.name, "--kind", im.kind); code != ExitOK {
			t.Fatalf("importing %s: %s", im.name, errOut)
		}
	}
	// The repository's docs, and an image file of the user's own.
	work := t.TempDir()
	abs, err := filepath.Abs(filepath.Join(repoRoot, "docs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(work, "docs")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "create", "-f", "vmdk", filepath.Join(work, "debian.vmdk"), "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	cmds := readmeCommands(t, "Using it")
	t.Chdir(work)
	// VMs outlive their agent: delete what the README made, before the
	// server stops.
	t.Cleanup(func() {
		if out, errOut, code := cli(t, "", "vm", "list", "-o", "json"); code != ExitOK || strings.Contains(out, `"web-1"`) {
			if _, errOut, code = cli(t, "", "vm", "delete", "web-1"); code != ExitOK {
				t.Errorf("vm delete web-1: %s", errOut)
			}
		}
	})

	vmUID := regexp.MustCompile(`UID:\s+(\S+)`)
	for _, c := range cmds {
		if len(c.args) > 1 && c.args[0] == "vm" && c.args[1] == "console" {
			continue // interactive: it reads the terminal until Ctrl-]
		}
		out, errOut, code := cli(t, c.stdin, c.args...)
		if code != ExitOK {
			t.Errorf("README: %s: exit %d\n%s%s", c.line, code, out, errOut)
			continue
		}
		switch strings.Join(c.args[:min(2, len(c.args))], " ") {
		case "version":
			if !strings.Contains(out, "Server:  0.1.0") {
				t.Errorf("README: %s:\n%s", c.line, out)
			}
		case "vm create":
			// The user-data reached the VM's seed disk, which the guest
			// found.
			show, _, _ := cli(t, "", "vm", "show", "web-1")
			m := vmUID.FindStringSubmatch(show)
			if m == nil || !regexp.MustCompile(`Cloud-init:\s+yes`).MatchString(show) {
				t.Fatalf("vm show web-1:\n%s", show)
			}
			waitConsole(t, "web-1", guest.SeedPrefix+m[1])
		case "vm list":
			if strings.Contains(c.line, "tier=web") && !strings.Contains(out, `"name": "web-1"`) {
				t.Errorf("README: %s:\n%s", c.line, out)
			}
		case "op list":
			if !strings.Contains(out, "vm.create") || !strings.Contains(out, "vm.stop") {
				t.Errorf("README: %s:\n%s", c.line, out)
			}
		}
	}
}

// waitConsole waits for text on a VM's serial console.
func waitConsole(t *testing.T, vm, text string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, _ := cli(t, "", "vm", "console-log", vm)
		if strings.Contains(out, text) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q never appeared on the console of %s:\n%s", text, vm, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
