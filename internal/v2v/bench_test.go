package v2v

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/provider/libvirt"
)

// benchDisk writes a raw disk of size bytes whose every other 4 MiB holds
// random data (half of it data, half zeros), once per directory.
func benchDisk(b *testing.B, path string, size int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewChaCha8([32]byte{1}))
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += 8 << 20 {
		for i := 0; i < len(buf); i += 8 {
			v := r.Uint64()
			for j := 0; j < 8; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCopyRate copies one raw disk (POLYVISOR_BENCH_DISK_MIB, default
// 256, half of it data) into a qcow2: with qemu-img convert from a local
// file (the limit of the machine), and with a migration's whole copy
// (written into the qcow2 as it streams, then read back once) from
// libvirt's download stream and from vcsim's NFC export lease (copy),
// beside the same stream read into nothing (to-null: the source's own
// rate). MB/s is the disk's virtual size over the time; each phase's own
// rate is reported as PHASE-MB/s.
func BenchmarkCopyRate(b *testing.B) {
	mib, _ := strconv.ParseInt(os.Getenv("POLYVISOR_BENCH_DISK_MIB"), 10, 64)
	if mib <= 0 {
		mib = 256
	}
	size := mib << 20
	dir := b.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	benchDisk(b, raw, size)
	ctx := context.Background()

	b.Run("qemu-img-convert", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			out := filepath.Join(b.TempDir(), "out.qcow2")
			if o, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out).CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, o)
			}
		}
	})

	copyWith := func(b *testing.B, name string, streams Streams) {
		b.SetBytes(size)
		rates := map[string]float64{}
		for i := 0; i < b.N; i++ {
			hw := Hardware{Name: name, VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "d", Bus: BusVirtio, CapacityBytes: size,
				Source: DiskSource{Kind: SourceStream, Ref: "0"}}}}
			c := &Copier{Dir: b.TempDir(), Streams: streams, Progress: func(p Progress) {
				if p.Total > 0 && p.Done == p.Total && p.Rate > 0 {
					rates[p.Phase] = p.Rate
				}
			}}
			if _, err := c.CopyVM(ctx, PlanVM(hw, Options{Host: "h"})); err != nil {
				b.Fatal(err)
			}
		}
		for phase, r := range rates {
			b.ReportMetric(r/1e6, phase+"-MB/s")
		}
	}
	// toNull reads the whole stream into nothing: the source's own rate.
	toNull := func(b *testing.B, streams Streams) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			st, err := streams(ctx, "", Disk{CapacityBytes: size})
			if err != nil {
				b.Fatal(err)
			}
			rc, err := st.Open(ctx, 0)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil || n != size {
				b.Fatalf("read %d bytes of %d: %v", n, size, err)
			}
		}
	}
	withSource := func(b *testing.B, name string, streams Streams) {
		b.Run("copy", func(b *testing.B) { copyWith(b, name, streams) })
		b.Run("to-null", func(b *testing.B) { toNull(b, streams) })
	}

	// A streamOptimized VMDK of the disk (what an ESXi's export lease
	// sends) converted locally by qemu-img, and copied from a file's
	// stream (inflated and written as it streams, then read back).
	b.Run("streamOptimized", func(b *testing.B) {
		vmdk := filepath.Join(dir, "disk.vmdk")
		if o, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, o)
		}
		b.Run("qemu-img-convert", func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				out := filepath.Join(b.TempDir(), "out.qcow2")
				if o, err := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", vmdk, out).CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, o)
				}
			}
		})
		b.Run("copy", func(b *testing.B) {
			copyWith(b, "vm", func(context.Context, string, Disk) (Stream, error) { return &fileStream{path: vmdk}, nil })
		})
	})

	b.Run("libvirt-download", func(b *testing.B) {
		if _, err := os.Stat(libvirtSocket); err != nil {
			b.Skip("no libvirtd")
		}
		pool := fmt.Sprintf("v2vbench-%d", time.Now().UnixNano()%1e9)
		poolDir := filepath.Join(dir, "pool")
		os.Mkdir(poolDir, 0o755)
		if o, err := exec.Command("virsh", "-c", "qemu:///system", "pool-create-as", pool, "dir", "--target", poolDir).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, o)
		}
		defer exec.Command("virsh", "-c", "qemu:///system", "pool-destroy", pool).Run()
		if err := os.Link(raw, filepath.Join(poolDir, "disk.raw")); err != nil {
			b.Fatal(err)
		}
		exec.Command("virsh", "-c", "qemu:///system", "pool-refresh", pool).Run()
		p := libvirt.New(provider.Config{URL: "qemu:///system"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err := p.Connect(ctx); err != nil {
			b.Fatal(err)
		}
		src := LibvirtSource{Provider: p}
		key := filepath.Join(poolDir, "disk.raw")
		withSource(b, "lv", func(ctx context.Context, vm string, d Disk) (Stream, error) {
			d.Source.Ref = key
			return src.Streams()(ctx, vm, d)
		})
	})

	b.Run("vcsim-nfc", func(b *testing.B) {
		m := simulator.VPX()
		m.Host = 0
		if err := m.Create(); err != nil {
			b.Fatal(err)
		}
		defer m.Remove()
		s := m.Service.NewServer()
		defer s.Close()
		gc, err := govmomi.NewClient(ctx, s.URL, true)
		if err != nil {
			b.Fatal(err)
		}
		// vcsim's first VM; its disk's file on the datastore is the disk.
		src := &VSphereSource{Client: gc.Client}
		vm, err := src.vm(ctx, "DC0_C0_RP0_VM0")
		if err != nil {
			b.Fatal(err)
		}
		var mvm mo.VirtualMachine
		if err := vm.Properties(ctx, vm.Reference(), []string{"config.hardware.device", "datastore"}, &mvm); err != nil {
			b.Fatal(err)
		}
		var dsm mo.Datastore
		if err := object.NewDatastore(gc.Client, mvm.Datastore[0]).Properties(ctx, mvm.Datastore[0], []string{"info"}, &dsm); err != nil {
			b.Fatal(err)
		}
		disk := object.VirtualDeviceList(mvm.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil))[0]
		var dp object.DatastorePath
		dp.FromString(disk.GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo().FileName)
		file := filepath.Join(dsm.Info.GetDatastoreInfo().Url, dp.Path)
		os.Remove(file)
		if err := os.Link(raw, file); err != nil {
			b.Fatal(err)
		}
		e, err := src.export(ctx, "DC0_C0_RP0_VM0")
		if err != nil {
			b.Fatal(err)
		}
		defer src.Finish(ctx, "DC0_C0_RP0_VM0", true)
		// Serve the bench disk as the exported disk.
		withSource(b, "vs", func(ctx context.Context, _ string, _ Disk) (Stream, error) {
			return &nfcStream{c: gc.Client.Client, u: e.disks[0]}, nil
		})
	})
}
