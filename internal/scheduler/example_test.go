package scheduler_test

import (
	"errors"
	"fmt"

	"github.com/polyvisor/polyvisor/internal/scheduler"
)

func ExamplePlace() {
	snap := scheduler.Snapshot{Hosts: []scheduler.HostInfo{
		{Name: "h1", Ready: true, CPUs: 2, MemoryMiB: 4096, AllocatedVCPUs: 7, AllocatedMemoryMiB: 512},
		{Name: "h2", Ready: true, CPUs: 4, MemoryMiB: 8192, AllocatedMemoryMiB: 6144},
		{Name: "h3", Ready: false, CPUs: 16, MemoryMiB: 65536},
	}}
	cfg := scheduler.Config{} // defaults: 4 vcpus per cpu, no memory overcommit, 256 MiB reserved

	host, err := scheduler.Place(cfg, snap, scheduler.Request{VCPUs: 2, MemoryMiB: 1024})
	fmt.Println(host, err)

	_, err = scheduler.Place(cfg, snap, scheduler.Request{VCPUs: 2, MemoryMiB: 4096})
	var noRoom *scheduler.NoRoomError
	fmt.Println(errors.As(err, &noRoom), err)

	_, err = scheduler.Place(cfg, snap, scheduler.Request{VCPUs: 1, MemoryMiB: 512, Host: "h9"})
	var unknown *scheduler.UnknownHostError
	fmt.Println(errors.As(err, &unknown), err)
	// Output:
	// h2 <nil>
	// true no host has room for 2 vcpus and 4096 MiB: h1: needs 2 vcpus, 1 free; h2: needs 4096 MiB memory, 1792 MiB free; h3: not ready
	// true host "h9" not found
}
