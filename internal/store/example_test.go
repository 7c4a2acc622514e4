package store_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// A store on an embedded etcd: register a collection, start, then write
// with optimistic concurrency and read from the index.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "polyvisor-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	vms := store.NewCollection(s, "vms", func(vm *api.VM, v int64) { vm.Version = v })
	if err := s.Start(ctx); err != nil {
		log.Fatal(err)
	}

	vm := &api.VM{Meta: api.Meta{Name: "web-1"}, Spec: api.VMSpec{VCPUs: 2, PowerState: api.PowerRunning}}
	if _, err := vms.Create(ctx, "web-1", vm); err != nil {
		log.Fatal(err)
	}
	_, err = vms.Create(ctx, "web-1", vm)
	fmt.Println(errors.Is(err, store.ErrExists), err)

	// Read-modify-write: change a copy, write it back against the version
	// read, and retry on a conflict.
	for {
		cur, _ := vms.Get("web-1")
		next := store.Clone(cur)
		next.Spec.VCPUs = 4
		_, err := vms.Update(ctx, "web-1", next, cur.Version)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		break
	}
	got, _ := vms.Get("web-1")
	fmt.Println(got.Name, got.Spec.VCPUs)

	items, next, _ := vms.List(store.ListOptions[api.VM]{Limit: 10})
	fmt.Println(len(items), next == "")
	// Output:
	// true create vms "web-1": already exists
	// web-1 4
	// 1 true
}
