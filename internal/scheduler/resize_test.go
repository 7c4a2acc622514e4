package scheduler

import (
	"errors"
	"strings"
	"testing"
)

func TestResize(t *testing.T) {
	cfg := Config{CPUOvercommit: 2, ReservedMemoryMiB: -1} // a 2-cpu 2048 MiB host offers 4 vcpus, 2048 MiB
	tests := []struct {
		name     string
		h        HostInfo
		from, to Request
		// resource is the resource a refusal names; "" means it fits.
		resource string
		msg      string
	}{
		{"growth that fits", host("h", 2, 2048).alloc(2, 1024), Request{VCPUs: 1, MemoryMiB: 512}, Request{VCPUs: 2, MemoryMiB: 1024}, "", ""},
		{"growth to exactly full", host("h", 2, 2048).alloc(3, 1024), Request{VCPUs: 1, MemoryMiB: 512}, Request{VCPUs: 2, MemoryMiB: 1536}, "", ""},
		{"vcpus over the overcommitted room", host("h", 2, 2048).alloc(4, 1024), Request{VCPUs: 1, MemoryMiB: 512}, Request{VCPUs: 2, MemoryMiB: 512},
			ResourceVCPUs, `vcpus: host "h" has no room to grow the vm from 1 to 2: it needs 1 more, 0 of 4 are free`},
		{"memory over the room", host("h", 2, 2048).alloc(1, 1800), Request{VCPUs: 1, MemoryMiB: 512}, Request{VCPUs: 1, MemoryMiB: 1024},
			ResourceMemory, `memoryMiB: host "h" has no room to grow the vm from 512 to 1024 MiB: it needs 512 MiB more, 248 MiB of 2048 MiB are free`},
		{"more vcpus than the host's cpus", host("h", 2, 2048).alloc(1, 512), Request{VCPUs: 1, MemoryMiB: 512}, Request{VCPUs: 3, MemoryMiB: 512},
			ResourceVCPUs, `vcpus: a vm on host "h" can have at most 2 vcpus, the host's cpus, not 3`},
		{"a shrink fits on an over-allocated host", host("h", 2, 2048).alloc(9, 4096), Request{VCPUs: 2, MemoryMiB: 2048}, Request{VCPUs: 1, MemoryMiB: 1024}, "", ""},
		{"a shrink of one resource and growth of the other", host("h", 2, 2048).alloc(4, 1024), Request{VCPUs: 2, MemoryMiB: 512}, Request{VCPUs: 1, MemoryMiB: 2048},
			ResourceMemory, "it needs 1536 MiB more, 1024 MiB of 2048 MiB are free"},
		{"a host not ready or unschedulable still resizes its vms", host("h", 2, 2048).notReady().unschedulable(), Request{VCPUs: 1, MemoryMiB: 512}, Request{VCPUs: 2, MemoryMiB: 1024}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Resize(cfg, tt.h, tt.from, tt.to)
			if tt.resource == "" {
				if err != nil {
					t.Fatalf("Resize = %v, want it to fit", err)
				}
				return
			}
			var re *ResizeError
			if !errors.As(err, &re) {
				t.Fatalf("Resize = %v, want a *ResizeError", err)
			}
			if re.Resource != tt.resource || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Resize = %q (resource %s), want %s and %q", err, re.Resource, tt.resource, tt.msg)
			}
		})
	}
	if err := Resize(cfg, host("h", 2, 2048), Request{VCPUs: 1, MemoryMiB: 1}, Request{VCPUs: 0, MemoryMiB: 1}); err == nil {
		t.Error("Resize to 0 vcpus passed")
	}
}
