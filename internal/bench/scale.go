package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// scaleOptions are the flags of `bench scale`.
type scaleOptions struct {
	sizes        []int
	vmsPerHost   int
	concurrency  int
	vcpus        int
	memoryMiB    int64
	heartbeat    time.Duration
	idle         time.Duration
	createFor    time.Duration
	getSamples   int
	listSamples  int
	placeSamples int
	listAllRuns  int
	register     int
	shared       int
	profile      string
	keep         bool
	seed         bool
	seedSample   int
	// An existing control plane instead of one started for the run.
	servers    []string
	token      string
	caFile     string
	serverPIDs []int
}

func scaleCommand(output *outputFlag) *cobra.Command {
	opts := scaleOptions{}
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Measure the control plane with thousands of simulated hosts",
		Long: `Grow a fleet of simulated hosts (polyvisor agent --simulate, in child
processes) size by size against one polyvisor server started for the run
(embedded etcd, no built-in agent), or against the servers given with
--server, and measure at each size: the time to register the hosts (each
with a join token of its own), the heartbeat load on the server (requests/s
and CPU), VM creates up to --vms-per-host per host and their convergence,
p99 of GET /v1/vms/{name} and GET /v1/vms?limit=500, placement latency (one
create at a time), the time of a full 'polyvisor vm list --all-projects',
and the memory of the server and the simulator. Simulated hosts run no QEMU:
their hypervisor is in memory, with QEMU's measured latencies.`,
		Example: "  polyvisor bench scale --hosts 1000,10000\n  polyvisor bench scale --hosts 100 --vms-per-host 5 --idle 10s",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReport(cmd, *output, func(ctx context.Context, log io.Writer) (reporter, error) {
				return runScale(ctx, opts, log)
			})
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&opts.sizes, "hosts", []int{1000, 10000}, "fleet sizes to measure at, growing the same fleet")
	f.IntVar(&opts.vmsPerHost, "vms-per-host", 25, "VMs created per host at each size")
	f.IntVar(&opts.concurrency, "concurrency", 32, "concurrent clients for creates and join tokens")
	f.IntVar(&opts.vcpus, "vcpus", 2, "vCPUs of each VM")
	f.Int64Var(&opts.memoryMiB, "memory-mib", 4096, "memory of each VM, in MiB (hosts report 64 CPUs and 256 GiB)")
	f.DurationVar(&opts.heartbeat, "heartbeat-interval", 5*time.Second, "the simulated hosts' heartbeat interval (the agent's default)")
	f.DurationVar(&opts.idle, "idle", 30*time.Second, "how long the heartbeat load is measured with no other traffic")
	f.DurationVar(&opts.createFor, "create-timeout", 20*time.Minute, "stop creating VMs at one size after this long, and measure with what there is")
	f.IntVar(&opts.getSamples, "get-samples", 2000, "GET /v1/vms/{name} requests per size")
	f.IntVar(&opts.listSamples, "list-samples", 100, "GET /v1/vms?limit=500 requests per size")
	f.IntVar(&opts.placeSamples, "place-samples", 50, "single creates timed for placement per size (deleted after)")
	f.IntVar(&opts.listAllRuns, "list-all-runs", 2, "runs of 'polyvisor vm list --all-projects' per size")
	f.IntVar(&opts.register, "register-concurrency", 32, "simulated hosts registering at once")
	f.IntVar(&opts.shared, "shared-conns", -1, "the simulated hosts' requests go over this many shared connections (each host keeps its own watch connection); 0: each host has its own, as real agents; -1: shared (256) when the largest fleet could not hold two connections per host within the open files limit")
	f.StringVar(&opts.profile, "profile", "", "save the server's CPU and heap profiles (pprof) of each phase in this directory")
	f.BoolVar(&opts.keep, "keep", false, "keep the temporary dir (logs, etcd) instead of removing it")
	f.BoolVar(&opts.seed, "seed", false, "create --seed-sample VMs per size through the API (the create rate), and write the rest straight into the server's etcd as a create stores them: the hosts start them from their watches. For sizes the create rate cannot reach in a run; only with the run's own server")
	f.IntVar(&opts.seedSample, "seed-sample", 500, "with --seed: VMs created through the API at each size before the rest are seeded")
	f.StringSliceVar(&opts.servers, "server", nil, "measure these servers (repeatable, the URLs of one control plane) instead of starting one")
	f.StringVar(&opts.token, "token", "", "with --server: a superadmin's token (default $POLYVISOR_TOKEN)")
	f.StringVar(&opts.caFile, "ca-file", "", "with --server: the CA certificate to trust (default $POLYVISOR_CA_FILE)")
	f.IntSliceVar(&opts.serverPIDs, "server-pid", nil, "with --server: the servers' process ids on this machine, to measure their CPU and memory")
	return cmd
}

// scaleRun holds what one `bench scale` started and measures.
type scaleRun struct {
	opts    scaleOptions
	log     io.Writer
	bin     string
	tmp     string
	cl      *cleanups
	srv     *serverProc // nil with --server
	urls    []string
	token   string
	caFile  string
	c       *client.Client   // the admin's client of the first server, for setup and checks
	clients []*client.Client // one per concurrent worker, over the servers in turn
	meter   *fleetMeter
	sims    []*simProc
	hosts   int // simulated hosts so far
	vms     int // VMs created so far

	errMu  sync.Mutex
	errors []string // the first server errors seen, for the report
}

// noteError keeps the first few errors the server answered with.
func (r *scaleRun) noteError(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if len(r.errors) < 5 {
		r.errors = append(r.errors, err.Error())
		fmt.Fprintf(r.log, "  server error (retried): %v\n", err)
	}
}

func runScale(ctx context.Context, opts scaleOptions, log io.Writer) (*ScaleReport, error) {
	if len(opts.sizes) == 0 || opts.vmsPerHost < 0 || opts.concurrency < 1 || opts.getSamples < 1 || opts.listSamples < 1 {
		return nil, errors.New("--hosts, --concurrency, --get-samples and --list-samples must be at least 1 and --vms-per-host not negative")
	}
	if !slices.IsSorted(opts.sizes) || opts.sizes[0] < 1 {
		return nil, fmt.Errorf("--hosts: give growing sizes of at least 1, not %v", opts.sizes)
	}
	if opts.seed && (len(opts.servers) > 0 || opts.seedSample < 0) {
		return nil, errors.New("--seed writes into the run's own server's etcd: not with --server, and --seed-sample not negative")
	}
	if len(opts.servers) == 0 && (opts.token != "" || opts.caFile != "" || len(opts.serverPIDs) > 0) {
		return nil, errors.New("--token, --ca-file and --server-pid go with --server")
	}
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the polyvisor binary: %w", err)
	}
	var cl cleanups
	defer cl.run()
	tmp, err := os.MkdirTemp("", "pvbench-scale-")
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
	r := &scaleRun{opts: opts, log: log, bin: bin, tmp: tmp, cl: &cl}
	// The CLI runs of the benchmark read no user's config file.
	if err := os.WriteFile(filepath.Join(tmp, "no-config.yaml"), nil, 0o600); err != nil {
		return nil, fmt.Errorf("writing an empty CLI config: %w", err)
	}
	rep := &ScaleReport{Machine: describeMachine(ctx), VMsPerHost: opts.vmsPerHost, HeartbeatSeconds: opts.heartbeat.Seconds(),
		VCPUs: opts.vcpus, MemoryMiB: opts.memoryMiB}
	rep.FileLimit = raiseFileLimit()
	if r.opts.shared < 0 {
		r.opts.shared = 0
		if uint64(2*slices.Max(opts.sizes)+2000) > rep.FileLimit {
			r.opts.shared = 256
		}
	}
	rep.SharedConns = r.opts.shared
	if err := r.start(ctx, rep); err != nil {
		return nil, err
	}
	for _, size := range opts.sizes {
		step, err := r.step(ctx, size)
		rep.Steps = append(rep.Steps, step)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			// What was measured before the failure is reported with it.
			rep.Error = fmt.Sprintf("at %d hosts: %v", size, err)
			fmt.Fprintf(log, "the run ended early: %s\n", rep.Error)
			break
		}
	}
	rep.ServerErrors = r.errors
	rep.Targets = scaleTargets(rep)
	rep.Machine.LoadEnd = loadAvg()
	return rep, nil
}

// raiseFileLimit lifts this process's limit of open files (inherited by
// the server and the simulators, each of which holds a few connections per
// simulated host) as far as the kernel allows, and returns it.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	want := uint64(1 << 20)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			want = n
		}
	}
	if lim.Max < want {
		next := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next) == nil {
			return want
		}
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Max
}

// start runs or reaches the control plane, makes the clients and imports
// the images the VMs boot from.
func (r *scaleRun) start(ctx context.Context, rep *ScaleReport) error {
	o := r.opts
	r.meter = &fleetMeter{}
	if len(o.servers) > 0 {
		r.urls, r.token, r.caFile = o.servers, o.token, o.caFile
		if r.token == "" {
			r.token = os.Getenv("POLYVISOR_TOKEN")
		}
		if r.caFile == "" {
			r.caFile = os.Getenv("POLYVISOR_CA_FILE")
		}
		if r.token == "" {
			return errors.New("--server: give a superadmin's token with --token or $POLYVISOR_TOKEN")
		}
		r.meter.servers = o.serverPIDs
		rep.Servers = r.urls
		rep.ControlPlane = fmt.Sprintf("%d server(s) given with --server", len(r.urls))
	} else {
		extra := []string{"--no-agent"}
		if o.profile != "" {
			port, err := freePort()
			if err != nil {
				return err
			}
			extra = append(extra, "--debug-pprof-listen", "127.0.0.1:"+strconv.Itoa(port))
			rep.PprofURL = "http://127.0.0.1:" + strconv.Itoa(port)
		}
		fmt.Fprintf(r.log, "starting polyvisor server --no-agent (data dir %s)\n", filepath.Join(r.tmp, "server"))
		srv, err := startServer(ctx, r.cl, r.bin, filepath.Join(r.tmp, "server"), extra...)
		if err != nil {
			return err
		}
		r.srv = srv
		r.urls = []string{srv.url()}
		tok, err := os.ReadFile(filepath.Join(srv.dataDir, "admin.token"))
		if err != nil {
			return fmt.Errorf("reading the admin token: %w", err)
		}
		r.token, r.caFile = strings.TrimSpace(string(tok)), filepath.Join(srv.dataDir, "pki", "ca.crt")
		r.meter.servers = []int{srv.pid()}
		rep.Servers = r.urls
		rep.ControlPlane = "1 server (embedded etcd), started for the run"
		if rep.ServerAtStart, err = procMemory(srv.pid()); err != nil {
			return err
		}
	}
	var err error
	if r.c, err = r.client(r.urls[0]); err != nil {
		return err
	}
	for i := range o.concurrency {
		c, err := r.client(r.urls[i%len(r.urls)])
		if err != nil {
			return err
		}
		r.clients = append(r.clients, c)
	}
	// The simulated hosts never fetch image content: small stand-ins do.
	for _, im := range []struct{ name, kind string }{{imageKernel, api.ImageKernel}, {imageInitrd, api.ImageInitrd}} {
		body := strings.NewReader(strings.Repeat("polyvisor bench scale stand-in "+im.kind+"\n", 128))
		op, err := r.c.UploadImage(ctx, im.name, im.kind, body, body.Size(), nil)
		if err != nil {
			if client.IsConflict(err) {
				continue // there from an earlier run against the same servers
			}
			return fmt.Errorf("importing image %s: %w", im.name, err)
		}
		if err := waitSucceeded(ctx, r.c, op, time.Minute); err != nil {
			return err
		}
	}
	return nil
}

func (r *scaleRun) client(url string) (*client.Client, error) {
	return client.New(client.Config{URL: url, Token: r.token, CAFile: r.caFile, UserAgent: "polyvisor-bench"})
}

// failure adds the server's log to err when the bench started the server.
func (r *scaleRun) failure(err error) error {
	if r.srv != nil {
		return r.srv.failure(err)
	}
	return err
}

// step grows the fleet to size hosts and size*vmsPerHost VMs and measures.
func (r *scaleRun) step(ctx context.Context, size int) (ScaleStep, error) {
	st := ScaleStep{Hosts: size, VMsWanted: size * r.opts.vmsPerHost}
	fmt.Fprintf(r.log, "== %d hosts\n", size)
	if err := r.grow(ctx, &st, size); err != nil {
		return st, err
	}
	if err := r.idleLoad(ctx, &st); err != nil {
		return st, err
	}
	if err := r.createVMs(ctx, &st); err != nil {
		return st, err
	}
	st.VMs = r.vms
	if err := r.reads(ctx, &st); err != nil {
		return st, err
	}
	if err := r.placement(ctx, &st); err != nil {
		return st, err
	}
	if err := r.listAll(ctx, &st); err != nil {
		return st, err
	}
	r.memory(ctx, &st)
	return st, nil
}

// scaleVMName is the name of the i-th VM of the run.
func scaleVMName(i int) string { return fmt.Sprintf("s-%07d", i) }

// createVMs creates VMs up to hosts*vmsPerHost with the concurrent clients
// (or until --create-timeout), then waits until the simulated hosts report
// them running.
func (r *scaleRun) createVMs(ctx context.Context, st *ScaleStep) error {
	if !r.opts.seed {
		return r.createThroughAPI(ctx, st, st.VMsWanted)
	}
	if err := r.createThroughAPI(ctx, st, min(st.VMsWanted, r.vms+r.opts.seedSample)); err != nil {
		return err
	}
	if r.vms >= st.VMsWanted {
		return nil
	}
	return r.seedVMs(ctx, st, r.vms, st.VMsWanted)
}

// createThroughAPI creates VMs up to want through the API and waits for
// them to run.
func (r *scaleRun) createThroughAPI(ctx context.Context, st *ScaleStep, want int) error {
	if r.vms >= want {
		return nil
	}
	from := r.vms
	fmt.Fprintf(r.log, "creating VMs %d..%d with %d clients\n", from, want-1, r.opts.concurrency)
	cctx, cancel := context.WithTimeout(ctx, r.opts.createFor)
	defer cancel()
	cpu0 := r.meter.sample()
	start := time.Now()
	stopProf := r.profile(ctx, fmt.Sprintf("%d-hosts-create", st.Hosts), 30*time.Second)
	defer stopProf()
	var failed atomic.Int64
	ds, wall, made, err := runUntil(cctx, want-from, r.opts.concurrency, func(ctx context.Context, w, i int) error {
		name := scaleVMName(from + i)
		// A server that fails a create (its store timing out under load)
		// is counted and asked again, under the same idempotency key: a
		// create it committed before failing is not made twice.
		var err error
		for range 3 {
			_, err = r.clients[w].CreateVM(ctx, api.VMCreate{
				Name: name, VCPUs: r.opts.vcpus, MemoryMiB: r.opts.memoryMiB,
				Boot: api.Boot{Kernel: imageKernel, Initrd: imageInitrd, Cmdline: "console=ttyS0"},
			}, client.CreateOptions{IdempotencyKey: "bench-scale-" + name})
			if err == nil || ctx.Err() != nil || client.HTTPStatus(err) < 500 {
				return err
			}
			failed.Add(1)
			r.noteError(err)
		}
		return err
	})
	st.CreateErrors = int(failed.Load())
	if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
		return r.failure(err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.vms = from + made
	st.Create = throughput(ds, r.opts.concurrency, wall)
	st.Create.CPU = r.meter.since(cpu0)
	st.CreateTimedOut = made < want-from
	fmt.Fprintf(r.log, "  %d creates, %.0f/s, p50 %.1f ms, p99 %.1f ms (CPUs: %s)\n", made, st.Create.PerSecond,
		st.Create.Latency.P50Ms, st.Create.Latency.P99Ms, st.Create.CPU)
	if st.CreateTimedOut {
		fmt.Fprintf(r.log, "  stopped creating after %v: %d of %d VMs\n", r.opts.createFor, r.vms, want)
	}
	cpu0 = r.meter.sample()
	running, err := r.waitRunning(ctx, r.vms)
	if err != nil {
		return err
	}
	st.Running = running
	st.ConvergeSeconds = time.Since(start).Seconds()
	st.ConvergeCPU = r.meter.since(cpu0)
	fmt.Fprintf(r.log, "  %d VMs running %.1f s after the creates began (CPUs after the last create: %s)\n", running, st.ConvergeSeconds, st.ConvergeCPU)
	return nil
}

// runUntil is runConcurrent that stops, without error, when ctx's deadline
// passes: it returns the latencies of the calls made and how many.
func runUntil(ctx context.Context, n, conc int, f func(ctx context.Context, worker, i int) error) ([]time.Duration, time.Duration, int, error) {
	lat := make([]time.Duration, n)
	done := make([]bool, n)
	_, wall, err := runConcurrent(ctx, n, conc, func(ctx context.Context, w, i int) error {
		t := time.Now()
		if err := f(ctx, w, i); err != nil {
			return err
		}
		lat[i], done[i] = time.Since(t), true
		return nil
	})
	var ds []time.Duration
	for i, ok := range done {
		if ok {
			ds = append(ds, lat[i])
		}
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return ds, wall, len(ds), nil
	}
	return ds, wall, len(ds), err
}

// waitRunning waits until the server counts n VMs running, following the
// simulators' own counts between scrapes of the server's metrics (which
// are large with thousands of hosts). It gives up without error after the
// count stayed put for stallWindow.
func (r *scaleRun) waitRunning(ctx context.Context, n int) (int, error) {
	running, lastMove := -1, time.Now()
	lastScrape := time.Time{}
	err := poll(ctx, 2*time.Hour, time.Second, fmt.Sprintf("%d VMs running", n), func() error {
		if err := r.simsAlive(); err != nil {
			return &fatal{err}
		}
		sim := r.simRunning()
		if sim < n && time.Since(lastScrape) < 15*time.Second {
			if sim != running {
				running, lastMove = sim, time.Now()
			}
			if time.Since(lastMove) > stallWindow {
				return nil
			}
			return fmt.Errorf("%d of %d running on the simulated hosts", sim, n)
		}
		lastScrape = time.Now()
		v, err := r.serverCount(ctx, api.PowerRunning)
		if err != nil {
			return err
		}
		if v != running {
			running, lastMove = v, time.Now()
		}
		if v >= n || time.Since(lastMove) > stallWindow {
			return nil
		}
		return fmt.Errorf("%d of %d running as the server counts", v, n)
	})
	return running, err
}

// serverCount is polyvisor_vms{state=...} summed over the servers' metrics.
func (r *scaleRun) serverCount(ctx context.Context, state string) (int, error) {
	text, err := r.metrics(ctx)
	if err != nil {
		return 0, err
	}
	v, _ := metricValue(text, `polyvisor_vms{state="`+state+`"}`)
	return int(v), nil
}

// metrics scrapes the first server's /metrics (the VM counts are the
// store's, the same through every server).
func (r *scaleRun) metrics(ctx context.Context) (string, error) {
	if r.srv != nil {
		return scrapeMetrics(ctx, r.srv.local, "http://polyvisor")
	}
	return scrapeMetricsAuth(ctx, r.c, r.urls[0], r.token)
}

// reads measures GET /v1/vms/{name} and GET /v1/vms?limit=500 with one
// client, at the size reached.
func (r *scaleRun) reads(ctx context.Context, st *ScaleStep) error {
	if r.vms == 0 {
		return nil
	}
	c := r.clients[0]
	cpu0 := r.meter.sample()
	ds, wall, err := runConcurrent(ctx, r.opts.getSamples, 1, func(ctx context.Context, _, _ int) error {
		_, err := c.GetVM(ctx, scaleVMName(rand.IntN(r.vms)))
		return err
	})
	if err != nil {
		return r.failure(err)
	}
	st.Get = throughput(ds, 1, wall)
	st.Get.CPU = r.meter.since(cpu0)
	cpu0 = r.meter.sample()
	ds, wall, err = runConcurrent(ctx, r.opts.listSamples, 1, func(ctx context.Context, _, _ int) error {
		l, err := c.ListVMs(ctx, api.ListOptions{Limit: listPage})
		if err == nil && len(l.Items) != min(listPage, r.vms) {
			err = fmt.Errorf("list returned %d VMs, not %d", len(l.Items), min(listPage, r.vms))
		}
		return err
	})
	if err != nil {
		return r.failure(err)
	}
	st.List = throughput(ds, 1, wall)
	st.List.CPU = r.meter.since(cpu0)
	fmt.Fprintf(r.log, "  %d VMs: get p99 %.2f ms, list of %d p99 %.1f ms\n", r.vms, st.Get.Latency.P99Ms, listPage, st.List.Latency.P99Ms)
	return nil
}

// placement times single creates, one at a time: the 202 (the scheduler
// placing the VM on one of the hosts, and the store write) and the time
// until the VM runs on its simulated host. The VMs are deleted after.
func (r *scaleRun) placement(ctx context.Context, st *ScaleStep) error {
	n := r.opts.placeSamples
	if n < 1 {
		return nil
	}
	c := r.clients[0]
	var accepted, running []time.Duration
	var names []string
	cpu0 := r.meter.sample()
	start := time.Now()
	for i := range n {
		name := fmt.Sprintf("place-%d-%d", st.Hosts, i)
		t0 := time.Now()
		op, err := c.CreateVM(ctx, api.VMCreate{
			Name: name, VCPUs: r.opts.vcpus, MemoryMiB: r.opts.memoryMiB,
			Boot: api.Boot{Kernel: imageKernel, Initrd: imageInitrd, Cmdline: "console=ttyS0"},
		}, client.CreateOptions{})
		if err != nil {
			return r.failure(err)
		}
		accepted = append(accepted, time.Since(t0))
		names = append(names, name)
		if err := waitSucceeded(ctx, c, op, 5*time.Minute); err != nil {
			return r.failure(err)
		}
		running = append(running, time.Since(t0))
	}
	st.Place = throughput(accepted, 1, time.Since(start))
	st.Place.CPU = r.meter.since(cpu0)
	st.PlaceToRunning = summarize(running)
	fmt.Fprintf(r.log, "  placement: 202 p50 %.1f ms p99 %.1f ms; running p50 %.0f ms p99 %.0f ms\n",
		st.Place.Latency.P50Ms, st.Place.Latency.P99Ms, st.PlaceToRunning.P50Ms, st.PlaceToRunning.P99Ms)
	for _, name := range names {
		op, err := c.DeleteVM(ctx, name, false)
		if err != nil {
			return r.failure(err)
		}
		if err := waitSucceeded(ctx, c, op, 5*time.Minute); err != nil {
			return r.failure(err)
		}
	}
	return nil
}

// listAll times `polyvisor vm list --all-projects`, the binary as a user
// runs it, its table going to a counter.
func (r *scaleRun) listAll(ctx context.Context, st *ScaleStep) error {
	for range r.opts.listAllRuns {
		cmd := execCommand(ctx, r.bin, "vm", "list", "--all-projects")
		cmd.Env = append(os.Environ(), "POLYVISOR_SERVER="+r.urls[0], "POLYVISOR_TOKEN="+r.token, "POLYVISOR_CA_FILE="+r.caFile,
			"POLYVISOR_CONFIG="+filepath.Join(r.tmp, "no-config.yaml"))
		var lines lineCounter
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &lines, &stderr
		cpu0 := r.meter.sample()
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("polyvisor vm list --all-projects: %w: %s", err, stderr.String())
		}
		run := ListAllRun{Seconds: time.Since(t0).Seconds(), Lines: lines.n, CPU: r.meter.since(cpu0)}
		if ps := cmd.ProcessState; ps != nil {
			run.CLICPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
			if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
				run.CLIMaxRSSBytes = ru.Maxrss << 10
			}
		}
		st.ListAll = append(st.ListAll, run)
		fmt.Fprintf(r.log, "  vm list --all-projects: %.2f s, %d lines\n", run.Seconds, run.Lines)
	}
	return nil
}

// lineCounter counts the lines written to it.
type lineCounter struct{ n int }

func (l *lineCounter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			l.n++
		}
	}
	return len(p), nil
}

// memory reads the servers' and simulators' memory and the servers' Go
// statistics.
func (r *scaleRun) memory(ctx context.Context, st *ScaleStep) {
	for _, pid := range r.meter.servers {
		if m, err := procMemory(pid); err == nil {
			st.ServerMemory = append(st.ServerMemory, m)
		}
	}
	for _, s := range r.sims {
		if m, err := procMemory(s.pid()); err == nil {
			st.SimMemory = append(st.SimMemory, m)
		}
	}
	if text, err := r.metrics(ctx); err == nil {
		st.ServerGo = goMemoryOf(text)
	}
	r.heapProfile(ctx, fmt.Sprintf("%d-hosts-end", st.Hosts))
	if r.srv != nil {
		if fi, err := os.Stat(filepath.Join(r.srv.dataDir, "etcd", "member", "snap", "db")); err == nil {
			st.EtcdDBBytes = fi.Size()
		}
	}
	if len(st.ServerMemory) > 0 {
		fmt.Fprintf(r.log, "  server VmRSS %s (VmHWM %s), Go heap in use %s, %d goroutines\n",
			mib(st.ServerMemory[0].RSSBytes), mib(st.ServerMemory[0].HWMBytes), mib(st.ServerGo.HeapInuseBytes), st.ServerGo.Goroutines)
	}
}
