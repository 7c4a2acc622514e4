package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// seedBatch is how many VMs one seeding transaction writes (etcd's default
// bound on a transaction's operations is 128).
const seedBatch = 100

// seedVMs writes the VMs from..want-1 straight into the run's own server's
// embedded etcd, through its client socket, as the server's create would
// store them, placed round-robin on the ready simulated hosts: the hosts
// then see them in their watches and start them as they would a created
// VM. It measures what a fleet of that size costs the control plane to
// serve and converge, at sizes the create rate could not reach within a
// run; the create path itself is measured by --seed-sample API creates
// before. A seeded VM has no create operation and counts in no project's
// quota usage or host admission record (the bench sets no quota, and its
// hosts have room for far more).
func (r *scaleRun) seedVMs(ctx context.Context, st *ScaleStep, from, want int) error {
	if r.srv == nil {
		return fmt.Errorf("--seed: only with the run's own server (not --server)")
	}
	hosts, err := r.c.ListAllHosts(ctx, api.ListOptions{Limit: 1000})
	if err != nil {
		return fmt.Errorf("listing the hosts to seed VMs on: %w", err)
	}
	var names []string
	for _, h := range hosts {
		if strings.HasPrefix(h.Name, simPrefix) && h.Status.State == api.HostReady {
			names = append(names, h.Name)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("--seed: no ready simulated host")
	}
	slices.Sort(names)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + filepath.Join(r.srv.dataDir, "etcd.sock")},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("connecting to the server's etcd: %w", err)
	}
	defer cli.Close()

	fmt.Fprintf(r.log, "seeding VMs %d..%d into the server's etcd, %d per transaction, on %d hosts\n", from, want-1, seedBatch, len(names))
	batches := (want - from + seedBatch - 1) / seedBatch
	cpu0 := r.meter.sample()
	start := time.Now()
	ds, wall, err := runConcurrent(ctx, batches, 8, func(ctx context.Context, _, b int) error {
		lo := from + b*seedBatch
		hi := min(lo+seedBatch, want)
		var conds []clientv3.Cmp
		var puts []clientv3.Op
		for i := lo; i < hi; i++ {
			vm := r.seedVM(scaleVMName(i), names[i%len(names)])
			b, err := json.Marshal(vm)
			if err != nil {
				return err
			}
			key := serverPrefix + "vms/" + api.Key(api.DefaultProject, vm.Name)
			conds = append(conds, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
			puts = append(puts, clientv3.OpPut(key, string(b)))
		}
		resp, err := cli.Txn(ctx).If(conds...).Then(puts...).Commit()
		if err != nil {
			return fmt.Errorf("seeding VMs %d..%d: %w", lo, hi-1, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("seeding VMs %d..%d: one exists already", lo, hi-1)
		}
		return nil
	})
	if err != nil {
		return r.failure(err)
	}
	st.Seeded = want - from
	st.Seed = throughput(ds, 8, wall)
	st.Seed.Count = st.Seeded
	st.Seed.PerSecond = rate(st.Seeded, wall)
	st.Seed.CPU = r.meter.since(cpu0)
	r.vms = want
	fmt.Fprintf(r.log, "  %d VMs seeded in %.1f s (CPUs: %s)\n", st.Seeded, wall.Seconds(), st.Seed.CPU)
	cpu0 = r.meter.sample()
	running, err := r.waitRunning(ctx, r.vms)
	if err != nil {
		return err
	}
	st.SeedRunning = running
	st.SeedConvergeSeconds = time.Since(start).Seconds()
	st.SeedConvergeCPU = r.meter.since(cpu0)
	fmt.Fprintf(r.log, "  %d VMs running %.1f s after the seeding began (CPUs after it: %s)\n", running, st.SeedConvergeSeconds, st.SeedConvergeCPU)
	return nil
}

// seedVM is a VM as the server's create stores it, placed on host.
func (r *scaleRun) seedVM(name, host string) *api.VM {
	now := time.Now().UTC()
	return &api.VM{
		Meta: api.Meta{Name: name, Project: api.DefaultProject, UID: api.NewUID(), Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec: api.VMSpec{
			Host: host, VCPUs: r.opts.vcpus, MemoryMiB: r.opts.memoryMiB, PowerState: api.PowerRunning,
			// Images by their keys, as a create stores them.
			Boot: api.Boot{Kernel: api.Key(api.DefaultProject, imageKernel), Initrd: api.Key(api.DefaultProject, imageInitrd), Cmdline: "console=ttyS0"},
		},
		Status: api.VMStatus{PowerState: api.PowerPending},
	}
}
