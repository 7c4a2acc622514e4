package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// apiHost is the joined agent's host name in the api benchmark.
const apiHost = "bench-agent"

// listPage is the page size of the list measurement.
const listPage = 500

// apiOptions are the flags of `bench api`.
type apiOptions struct {
	vms, concurrency, memoryVMs int
	getSamples, listSamples     int
	transport                   string
	guestDir                    string
	keep                        bool
	settle                      time.Duration
}

// CreatePhase is a batch of creates.
type CreatePhase struct {
	Throughput
	// FromVMs and ToVMs are how many VMs existed before and after.
	FromVMs int `json:"fromVMs"`
	ToVMs   int `json:"toVMs"`
	// ConvergeSeconds is from the batch's start until the agent had
	// reported every VM stopped (the create operations done), or until it
	// stalled: then Converged is false and Stopped says how far it got.
	ConvergeSeconds float64 `json:"convergeSeconds"`
	Converged       bool    `json:"converged"`
	Stopped         int     `json:"stopped"`
	// ConvergeCPU is where the CPU went from the last create's answer
	// until convergence.
	ConvergeCPU CPUUse `json:"convergeCpu"`
}

// ReadPhase is latency of one read route at some VM count and concurrency.
type ReadPhase struct {
	Route string `json:"route"`
	VMs   int    `json:"vms"`
	Throughput
	// Bytes is the size of one answer, where measured.
	Bytes int64 `json:"bytes,omitempty"`
}

// APIReport is the result of `bench api`.
type APIReport struct {
	Machine     Machine     `json:"machine"`
	Transport   string      `json:"transport"`
	Concurrency int         `json:"concurrency"`
	Create      CreatePhase `json:"create"`
	Etcd        EtcdPhase   `json:"etcd"`
	Reads       []ReadPhase `json:"reads"`
	Grow        CreatePhase `json:"grow"`
	Memory      MemoryPhase `json:"memory"`
	Targets     []Target    `json:"targets"`
}

// apiRun holds what one `bench api` started.
type apiRun struct {
	opts  apiOptions
	srv   *serverProc
	agent *proc
	c     *client.Client // the admin's client for setup and checks
	meter *cpuMeter
	log   io.Writer
	first string // name of the first VM, and its create operation
	opID  string
}

func runAPI(ctx context.Context, opts apiOptions, log io.Writer) (*APIReport, error) {
	if opts.vms < 1 || opts.concurrency < 1 || opts.getSamples < 1 || opts.listSamples < 1 {
		return nil, fmt.Errorf("--vms, --concurrency, --get-samples and --list-samples must be at least 1")
	}
	if opts.memoryVMs < opts.vms {
		return nil, fmt.Errorf("--memory-vms (%d) must be at least --vms (%d)", opts.memoryVMs, opts.vms)
	}
	if opts.transport != "tls" && opts.transport != "unix" {
		return nil, fmt.Errorf("--transport must be tls or unix, not %q", opts.transport)
	}
	guestDir, err := resolveGuestDir(ctx, opts.guestDir, log)
	if err != nil {
		return nil, err
	}
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the polyvisor binary: %w", err)
	}
	var cl cleanups
	defer cl.run()
	tmp, err := os.MkdirTemp("", "pvbench-api-")
	if err != nil {
		return nil, fmt.Errorf("making temp dir: %w", err)
	}
	cl.add(func() {
		if opts.keep {
			fmt.Fprintf(log, "kept %s\n", tmp)
			return
		}
		os.RemoveAll(tmp)
	})
	r := &apiRun{opts: opts, log: log}
	if err := r.start(ctx, &cl, bin, tmp, guestDir); err != nil {
		return nil, err
	}
	rep := &APIReport{Machine: describeMachine(ctx), Transport: opts.transport, Concurrency: opts.concurrency}
	if rep.Memory.ServerAtStart, err = procMemory(r.srv.pid()); err != nil {
		return nil, err
	}
	if err := r.measure(ctx, rep); err != nil {
		return nil, err
	}
	rep.Targets = apiTargets(rep)
	rep.Machine.LoadEnd = loadAvg()
	return rep, nil
}

// start runs the server (no built-in agent, overcommit high enough for the
// VMs to fit), joins one agent to it and imports the kernel and initrd.
func (r *apiRun) start(ctx context.Context, cl *cleanups, bin, tmp, guestDir string) error {
	var err error
	fmt.Fprintf(r.log, "starting polyvisor server --no-agent (data dir %s)\n", filepath.Join(tmp, "server"))
	r.srv, err = startServer(ctx, cl, bin, filepath.Join(tmp, "server"),
		"--no-agent", "--cpu-overcommit", "100000", "--memory-overcommit", "1000")
	if err != nil {
		return err
	}
	if r.c, err = r.srv.adminClient(); err != nil {
		return err
	}
	jt, err := r.c.CreateJoinToken(ctx, api.JoinTokenCreate{})
	if err != nil {
		return r.srv.failure(err)
	}
	fmt.Fprintf(r.log, "starting polyvisor agent joined with a join token\n")
	r.agent, err = startProc("polyvisor agent", filepath.Join(tmp, "agent.log"), bin, "agent",
		"--server", r.srv.url(), "--join-token", jt.Token, "--data-dir", filepath.Join(tmp, "agent"), "--name", apiHost)
	if err != nil {
		return err
	}
	cl.add(func() { r.agent.stop(15 * time.Second) })
	if err := waitHostReady(ctx, r.c, apiHost, r.srv.proc, r.agent); err != nil {
		return err
	}
	r.meter = &cpuMeter{server: r.srv.pid(), agent: r.agent.pid()}
	fmt.Fprintf(r.log, "importing the guest's kernel and initrd from %s\n", guestDir)
	return importGuest(ctx, r.c, guestDir, false)
}

// newClient returns a fresh client (its own connections) for the chosen
// transport, with a connection already open.
func (r *apiRun) newClient(ctx context.Context) (*client.Client, error) {
	var c *client.Client
	var err error
	if r.opts.transport == "unix" {
		c, err = client.New(client.Config{URL: "unix://" + r.srv.socket(), UserAgent: "polyvisor-bench"})
	} else {
		c, err = r.srv.adminClient()
	}
	if err != nil {
		return nil, err
	}
	if _, err := c.GetHost(ctx, apiHost); err != nil {
		return nil, fmt.Errorf("opening a connection: %w", err)
	}
	return c, nil
}

func (r *apiRun) newClients(ctx context.Context, n int) ([]*client.Client, error) {
	cs := make([]*client.Client, n)
	for i := range cs {
		c, err := r.newClient(ctx)
		if err != nil {
			return nil, err
		}
		cs[i] = c
	}
	return cs, nil
}

func vmName(i int) string { return fmt.Sprintf("bench-%06d", i) }

// measure runs the phases in order.
func (r *apiRun) measure(ctx context.Context, rep *APIReport) error {
	o := r.opts
	var err error
	fmt.Fprintf(r.log, "creating %d VMs with %d concurrent clients\n", o.vms, o.concurrency)
	if rep.Create, err = r.creates(ctx, 0, o.vms); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "  %.0f creates/s, p99 %.1f ms (CPUs: %s); agent converged in %.1f s\n", rep.Create.PerSecond, rep.Create.Latency.P99Ms, rep.Create.CPU, rep.Create.ConvergeSeconds)

	fmt.Fprintf(r.log, "raw etcd: %d puts and %d create txns with %d concurrent callers\n", o.vms, o.vms, o.concurrency)
	if rep.Etcd, err = rawEtcd(ctx, r.meter, r.srv.dataDir, r.first, r.opID, o.vms, o.concurrency); err != nil {
		return r.srv.failure(err)
	}
	fmt.Fprintf(r.log, "  %.0f puts/s, %.0f txns/s\n", rep.Etcd.Put.PerSecond, rep.Etcd.Txn.PerSecond)

	if err := r.reads(ctx, rep, o.vms, true); err != nil {
		return err
	}

	if o.memoryVMs > o.vms {
		fmt.Fprintf(r.log, "growing to %d VMs\n", o.memoryVMs)
		if rep.Grow, err = r.creates(ctx, o.vms, o.memoryVMs); err != nil {
			return err
		}
		fmt.Fprintf(r.log, "  %.0f creates/s, p99 %.1f ms (CPUs: %s); agent converged in %.1f s\n", rep.Grow.PerSecond, rep.Grow.Latency.P99Ms, rep.Grow.CPU, rep.Grow.ConvergeSeconds)
		if err := r.reads(ctx, rep, o.memoryVMs, false); err != nil {
			return err
		}
	}
	return r.memory(ctx, rep)
}

// creates makes VMs from..to-1 with opts.concurrency clients and waits
// until the agent reported every one stopped.
func (r *apiRun) creates(ctx context.Context, from, to int) (CreatePhase, error) {
	ph := CreatePhase{FromVMs: from, ToVMs: to}
	cs, err := r.newClients(ctx, r.opts.concurrency)
	if err != nil {
		return ph, err
	}
	opIDs := make([]string, to-from)
	start := time.Now()
	cpu0 := r.meter.sample()
	ds, wall, err := runConcurrent(ctx, to-from, r.opts.concurrency, func(ctx context.Context, w, i int) error {
		op, err := cs[w].CreateVM(ctx, api.VMCreate{
			Name: vmName(from + i), VCPUs: 1, MemoryMiB: 16, PowerState: api.PowerStopped,
			Boot: api.Boot{Kernel: imageKernel, Initrd: imageInitrd, Cmdline: "console=ttyS0 quiet"},
		}, client.CreateOptions{})
		if err == nil {
			opIDs[i] = op.ID
		}
		return err
	})
	if err != nil {
		return ph, r.srv.failure(err)
	}
	ph.Throughput = throughput(ds, r.opts.concurrency, wall)
	ph.CPU = r.meter.since(cpu0)
	if from == 0 {
		r.first, r.opID = vmName(0), opIDs[0]
	}
	cpu0 = r.meter.sample()
	if ph.Stopped, err = r.waitStopped(ctx, to); err != nil {
		return ph, err
	}
	ph.ConvergeCPU = r.meter.since(cpu0)
	ph.Converged = ph.Stopped >= to
	ph.ConvergeSeconds = time.Since(start).Seconds()
	if !ph.Converged {
		ph.ConvergeSeconds -= stallWindow.Seconds()
		fmt.Fprintf(r.log, "  the agent stalled: %d of %d VMs reported stopped, no progress for %v\n", ph.Stopped, to, stallWindow)
	}
	return ph, nil
}

// stallWindow is how long the count of stopped VMs may stay put before
// waitStopped gives up on the agent.
const stallWindow = time.Minute

// waitStopped waits until the server counts n VMs observed stopped, and
// returns how many it counts. It gives up without error when the count
// has not moved for stallWindow: a stuck agent is a finding to report, not
// a reason to lose the rest of the run.
func (r *apiRun) waitStopped(ctx context.Context, n int) (int, error) {
	stopped, lastMove := -1, time.Now()
	err := poll(ctx, 30*time.Minute, 250*time.Millisecond, fmt.Sprintf("the agent to report %d VMs stopped", n), func() error {
		if done, werr := r.agent.exited(); done {
			return &fatal{r.agent.failure(fmt.Errorf("agent exited: %v", werr))}
		}
		text, err := scrapeMetrics(ctx, r.srv.local, "http://polyvisor")
		if err != nil {
			return err
		}
		v, _ := metricValue(text, `polyvisor_vms{state="stopped"}`)
		if int(v) != stopped {
			stopped, lastMove = int(v), time.Now()
		}
		if stopped >= n || time.Since(lastMove) > stallWindow {
			return nil
		}
		return fmt.Errorf("%d of %d reported stopped", stopped, n)
	})
	return stopped, err
}

// reads measures GET /v1/vms/{name} (random names) and one page of 500 of
// GET /v1/vms, with one client and, when loaded, with opts.concurrency.
func (r *apiRun) reads(ctx context.Context, rep *APIReport, vms int, loaded bool) error {
	concs := []int{1}
	if loaded && r.opts.concurrency > 1 {
		concs = append(concs, r.opts.concurrency)
	}
	for _, conc := range concs {
		cs, err := r.newClients(ctx, conc)
		if err != nil {
			return err
		}
		cpu0 := r.meter.sample()
		ds, wall, err := runConcurrent(ctx, r.opts.getSamples, conc, func(ctx context.Context, w, _ int) error {
			_, err := cs[w].GetVM(ctx, vmName(rand.IntN(vms)))
			return err
		})
		if err != nil {
			return r.srv.failure(err)
		}
		get := ReadPhase{Route: "GET /v1/vms/{name}", VMs: vms, Throughput: throughput(ds, conc, wall)}
		get.CPU = r.meter.since(cpu0)
		cpu0 = r.meter.sample()
		ds, wall, err = runConcurrent(ctx, r.opts.listSamples, conc, func(ctx context.Context, w, _ int) error {
			l, err := cs[w].ListVMs(ctx, api.ListOptions{Limit: listPage})
			if err == nil && len(l.Items) != min(listPage, vms) {
				err = fmt.Errorf("list returned %d VMs, not %d", len(l.Items), min(listPage, vms))
			}
			return err
		})
		if err != nil {
			return r.srv.failure(err)
		}
		list := ReadPhase{Route: fmt.Sprintf("GET /v1/vms?limit=%d", listPage), VMs: vms, Throughput: throughput(ds, conc, wall)}
		list.CPU = r.meter.since(cpu0)
		rep.Reads = append(rep.Reads, get, list)
		fmt.Fprintf(r.log, "  %d VMs, %d client(s): get p99 %.2f ms, list of %d p99 %.1f ms\n", vms, conc, get.Latency.P99Ms, listPage, list.Latency.P99Ms)
		if conc == 1 {
			raw, err := r.rawList(ctx, vms)
			if err != nil {
				return err
			}
			rep.Reads = append(rep.Reads, raw)
			fmt.Fprintf(r.log, "  %d VMs, 1 client: list of %d to its last byte, undecoded (%d bytes): p99 %.1f ms\n", vms, listPage, raw.Bytes, raw.Latency.P99Ms)
		}
	}
	return nil
}
