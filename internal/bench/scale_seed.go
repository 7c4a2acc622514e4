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
		return seedTxn(ctx, cli, conds, puts, serverPrefix+"vms/"+api.Key(api.DefaultProject, scaleVMName(lo)), lo, hi)
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

// seedAttempts bounds the tries of one seeding transaction: an etcd that
// a loaded machine slows answers "request timed out" for a transaction
// it may still apply.
const seedAttempts = 5

// seedTxn commits one seeding transaction of VMs lo..hi-1, whose first
// key is first. A try that timed out is made again; the transaction is
// all or nothing, so when a later try finds the VMs there, its first VM
// says the earlier one applied.
func seedTxn(ctx context.Context, cli *clientv3.Client, conds []clientv3.Cmp, puts []clientv3.Op, first string, lo, hi int) error {
	var err error
	for attempt := range seedAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		var resp *clientv3.TxnResponse
		resp, err = cli.Txn(ctx).If(conds...).Then(puts...).Commit()
		switch {
		case err != nil:
			continue
		case resp.Succeeded:
			return nil
		case attempt == 0:
			return fmt.Errorf("seeding VMs %d..%d: one exists already", lo, hi-1)
		}
		// An earlier try timed out and this one found VMs there.
		got, gerr := cli.Get(ctx, first, clientv3.WithCountOnly())
		if gerr != nil {
			err = gerr
			continue
		}
		if got.Count == 1 {
			return nil
		}
		return fmt.Errorf("seeding VMs %d..%d: one exists already, %s not", lo, hi-1, first)
	}
	return fmt.Errorf("seeding VMs %d..%d (%d tries): %w", lo, hi-1, seedAttempts, err)
}
