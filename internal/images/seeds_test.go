package images

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// seedDir is the committed corpus of FuzzDetect, which FuzzInspect adds
// to its own: real images of every format.
const seedDir = "testdata/fuzz/FuzzDetect"

// seedImages are the images of the seed corpora, made with qemu-img:
// each accepted format in its variants, and what must be refused.
var seedImages = []struct {
	name, format string
	args         []string // qemu-img create arguments after -f format
	size         string   // virtual size; default 64K
	wholeUpTo    int      // kept whole up to this size, else its first 4 KiB
}{
	{"qcow2-v3", "qcow2", []string{"-o", "cluster_size=512"}, "", 64 << 10},
	{"qcow2-v2", "qcow2", []string{"-o", "compat=0.10,cluster_size=512"}, "", 64 << 10},
	{"qcow2-lazy-refcounts", "qcow2", []string{"-o", "cluster_size=512,lazy_refcounts=on"}, "", 64 << 10},
	{"qcow2-backing", "qcow2", []string{"-o", "cluster_size=512", "-b", "/etc/passwd", "-F", "raw"}, "", 64 << 10},
	{"qcow2-data-file", "qcow2", []string{"-o", "cluster_size=512,data_file=DIR/data.raw"}, "", 64 << 10},
	{"vmdk-monolithic-sparse", "vmdk", nil, "", 64 << 10},
	{"vmdk-stream-optimized", "vmdk", []string{"-o", "subformat=streamOptimized"}, "", 64 << 10},
	{"vmdk-split-descriptor", "vmdk", []string{"-o", "subformat=twoGbMaxExtentSparse"}, "", 64 << 10},
	{"vmdk-flat-descriptor", "vmdk", []string{"-o", "subformat=monolithicFlat"}, "", 64 << 10},
	{"vmdk-parent", "vmdk", []string{"-b", "DIR/vmdk-monolithic-sparse", "-F", "vmdk"}, "", 64 << 10},
	{"vpc-dynamic", "vpc", nil, "", 64 << 10},
	{"vpc-fixed", "vpc", []string{"-o", "subformat=fixed,force_size=on"}, "4K", 64 << 10},
	{"vhdx", "vhdx", nil, "", 0},
	{"vdi", "vdi", nil, "", 64 << 10},
	{"vdi-static", "vdi", []string{"-o", "static=on"}, "4K", 64 << 10},
	{"raw", "raw", nil, "2K", 64 << 10},
	{"qed", "qed", nil, "", 0},
	{"parallels", "parallels", nil, "", 0},
	{"qcow-v1", "qcow", nil, "", 0},
}

// TestFuzzSeeds holds the committed corpora to real images of every
// format detection knows. With POLYVISOR_WRITE_FUZZ_SEEDS=1 it first
// (re)writes them with qemu-img.
func TestFuzzSeeds(t *testing.T) {
	if os.Getenv("POLYVISOR_WRITE_FUZZ_SEEDS") == "1" {
		writeSeeds(t)
	}
	got := map[string][]string{}
	for _, s := range seedImages {
		b, err := os.ReadFile(filepath.Join(seedDir, "seed-"+s.name))
		if err != nil {
			t.Errorf("%v (POLYVISOR_WRITE_FUZZ_SEEDS=1 go test -run TestFuzzSeeds writes it)", err)
			continue
		}
		data, err := parseCorpusFile(b)
		if err != nil {
			t.Fatalf("%s/seed-%s: %v", seedDir, s.name, err)
		}
		format, err := detectReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			format = "refused"
		}
		got[format] = append(got[format], s.name)
	}
	t.Logf("seeds by detection: %v", got)
	for _, want := range []string{FormatQCOW2, FormatVMDK, FormatVPC, FormatVHDX, FormatVDI, FormatRaw, "refused"} {
		if len(got[want]) == 0 {
			t.Errorf("%s has no seed detected as %s", seedDir, want)
		}
	}
}

// corpusSeeds returns the values of the committed corpus of FuzzDetect.
func corpusSeeds(f *testing.F) [][]byte {
	files, _ := filepath.Glob(filepath.Join(seedDir, "*"))
	var out [][]byte
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		data, err := parseCorpusFile(b)
		if err != nil {
			f.Fatalf("%s: %v", p, err)
		}
		out = append(out, data)
	}
	return out
}

func writeSeeds(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	for _, s := range seedImages {
		path := filepath.Join(dir, s.name)
		args := []string{"create", "-q", "-f", s.format}
		for _, a := range s.args {
			args = append(args, strings.ReplaceAll(a, "DIR", dir))
		}
		size := s.size
		if size == "" {
			size = "64K"
		}
		run(t, "qemu-img", append(args, path, size)...)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b = trimSeed(t, s.format, path, b)
		if len(b) > s.wholeUpTo {
			b = b[:min(len(b), 4096)]
		}
		if err := os.MkdirAll(seedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(seedDir, "seed-"+s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("seed %s: %d bytes", s.name, len(b))
	}
}

// trimSeed drops the image's trailing zero sectors when qemu-img still
// reads it the same without them, to keep the corpus small.
func trimSeed(t *testing.T, format, path string, b []byte) []byte {
	end := len(b)
	for end > sectorSize && bytes.Count(b[end-sectorSize:end], []byte{0}) == sectorSize {
		end -= sectorSize
	}
	if end == len(b) {
		return b
	}
	short := path + ".short"
	if err := os.WriteFile(short, b[:end], 0o644); err != nil {
		t.Fatal(err)
	}
	info := func(p string) string {
		out, err := exec.Command("qemu-img", "info", "-f", format, "--output=json", p).Output()
		if err != nil {
			return "error"
		}
		return strings.ReplaceAll(string(out), p, "PATH")
	}
	if full := info(path); full != "error" && strings.Contains(info(short), `"virtual-size"`) &&
		slices.Equal(strings.Fields(virtualLine(full)), strings.Fields(virtualLine(info(short)))) {
		return b[:end]
	}
	return b
}

func virtualLine(info string) string {
	for l := range strings.Lines(info) {
		if strings.Contains(l, `"virtual-size"`) {
			return l
		}
	}
	return ""
}

// parseCorpusFile reads a one-value []byte corpus file of go test -fuzz.
func parseCorpusFile(b []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(b, []byte("go test fuzz v1\n"))
	if !ok {
		return nil, fmt.Errorf("not a fuzz corpus file")
	}
	lit, ok := bytes.CutPrefix(bytes.TrimSpace(rest), []byte("[]byte("))
	if !ok || !bytes.HasSuffix(lit, []byte(")")) {
		return nil, fmt.Errorf("not a []byte value")
	}
	s, err := strconv.Unquote(string(lit[:len(lit)-1]))
	if err != nil {
		return nil, err
	}
	return []byte(s), nil
}
