package images

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// FuzzDetect feeds crafted headers to the format detection, which reads
// untrusted bytes: it must never panic, and whatever it accepts as qcow2
// must not name a backing file.
func FuzzDetect(f *testing.F) {
	qcow := make([]byte, 1024)
	copy(qcow, "QFI\xfb")
	binary.BigEndian.PutUint32(qcow[4:], 3)
	binary.BigEndian.PutUint32(qcow[20:], 16)
	binary.BigEndian.PutUint32(qcow[100:], 104)
	binary.BigEndian.PutUint32(qcow[104:], qcowExtDataFile)
	binary.BigEndian.PutUint32(qcow[108:], 4)
	copy(qcow[112:], "/dev")
	f.Add(qcow)
	vmdk := make([]byte, 2048)
	copy(vmdk, "KDMV")
	binary.LittleEndian.PutUint64(vmdk[12:], 2048)
	binary.LittleEndian.PutUint64(vmdk[28:], 1)
	binary.LittleEndian.PutUint64(vmdk[36:], 1)
	copy(vmdk[512:], "parentFileNameHint=\"/x\"\n")
	f.Add(vmdk)
	f.Add([]byte("conectix"))
	f.Add(bytes.Repeat([]byte{0}, 512))
	if _, err := exec.LookPath("qemu-img"); err == nil {
		dir := f.TempDir()
		for _, fmt := range []string{"qcow2", "vmdk", "vpc", "vhdx", "vdi"} {
			p := filepath.Join(dir, "seed."+fmt)
			if exec.Command("qemu-img", "create", "-f", fmt, p, "1M").Run() == nil {
				if b, err := readHead(p, 4096); err == nil {
					f.Add(b)
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		format, err := detectReader(bytes.NewReader(data), int64(len(data)))
		if err == nil && format == FormatQCOW2 && len(data) >= 20 {
			if binary.BigEndian.Uint64(data[8:]) != 0 || binary.BigEndian.Uint32(data[16:]) != 0 {
				t.Fatal("accepted a qcow2 naming a backing file")
			}
		}
	})
}

func readHead(path string, n int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return b[:min(len(b), n)], nil
}
