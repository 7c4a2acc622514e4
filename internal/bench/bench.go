// Package bench is `polyvisor bench`: benchmarks that run the real
// polyvisor binary (as subprocesses), real QEMU and the real embedded
// etcd on this machine, and print a report.
//
//   - bench lifecycle: the time from POST /v1/vms to the tiny guest's marker
//     line on its serial console, against QEMU started by hand with the
//     same machine, interleaved round by round.
//   - bench api: create throughput and latency, get and list latency, the
//     raw put rate of the server's own etcd, and the server's memory with
//     thousands of stopped VMs.
//   - bench scale: the control plane with thousands of simulated hosts
//     (polyvisor agent --simulate): registration, heartbeat load, creates,
//     reads, placement and memory, size by size.
//
// Everything a benchmark starts (servers, agents, QEMUs, temp dirs) is
// removed when it ends, whether it succeeded, failed or was interrupted.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// outputFlag is the value of -o: table or json.
type outputFlag string

func (o *outputFlag) String() string { return string(*o) }
func (o *outputFlag) Type() string   { return "format" }
func (o *outputFlag) Set(s string) error {
	switch s {
	case "", "table":
		*o = "table"
	case "json":
		*o = "json"
	default:
		return fmt.Errorf("unknown output format %q (bench prints table or json)", s)
	}
	return nil
}

// Command returns `polyvisor bench` and its subcommands.
func Command() *cobra.Command {
	output := outputFlag("table")
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Polyvisor on this machine (lifecycle overhead, API throughput and memory)",
		Long: `Run benchmarks against real polyvisor processes started for the purpose on
temporary data dirs, real QEMU and the real embedded etcd, and print a report.
Nothing outside the temporary dirs is touched, and everything started is
stopped at the end, also on error or Ctrl-C. Progress goes to stderr, the
report to stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	// -o shadows the CLI's global -o (table, json, yaml) for bench, which
	// prints table or json.
	cmd.PersistentFlags().VarP(&output, "output", "o", "output format: table or json")
	cmd.AddCommand(lifecycleCommand(&output), apiCommand(&output), scaleCommand(&output))
	return cmd
}

func lifecycleCommand(output *outputFlag) *cobra.Command {
	opts := lifecycleOptions{}
	cmd := &cobra.Command{
		Use:   "lifecycle",
		Short: "Time POST /v1/vms to guest up, against bare QEMU",
		Long: `Start a polyvisor server (with its built-in agent) once, import the tiny
guest, and then, in each round, boot the guest once through the API and once
with qemu-system-x86_64 started directly with the same machine, alternating
which goes first. Polyvisor is timed from sending POST /v1/vms to the guest's
marker line in the VM's console.log on this host; bare QEMU from its start to
the marker in its serial output file. Both files are polled at the same
interval. One warm-up round is not counted. The report gives every round,
the medians and median(Polyvisor)/median(bare).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReport(cmd, *output, func(ctx context.Context, log io.Writer) (reporter, error) {
				return runLifecycle(ctx, opts, log)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.rounds, "rounds", 7, "counted rounds (plus one warm-up)")
	f.StringVar(&opts.guestDir, "guest-dir", "", "directory of the tiny guest (default $POLYVISOR_GUEST_DIR, else .cache/guest; built with scripts/build-guest.sh when missing)")
	f.DurationVar(&opts.pollEvery, "poll", 2*time.Millisecond, "how often the serial output files are polled for the marker")
	f.DurationVar(&opts.bootTimeout, "boot-timeout", 2*time.Minute, "how long one boot may take")
	f.BoolVar(&opts.keep, "keep", false, "keep the temporary dir (logs, VM dirs) instead of removing it")
	f.BoolVar(&opts.exact, "exact-args", false, "diagnostic: also boot, after the two, QEMU started directly with Polyvisor's own command line")
	return cmd
}

func apiCommand(output *outputFlag) *cobra.Command {
	opts := apiOptions{}
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Measure API throughput and latency, raw etcd, and server memory",
		Long: `Start a polyvisor server without its built-in agent, and one polyvisor agent
joined to it with a join token, then measure: VM creates per second with
--concurrency clients and the latency of the 202; the put rate of the same
VM JSON straight into the server's own embedded etcd (through its client
socket) at the same concurrency; GET /v1/vms/{name} and GET /v1/vms?limit=500
latency; and, after growing to --memory-vms VMs, the server's resident
memory and Go heap. VMs are created stopped (1 vCPU, 16 MiB, kernel and
initrd, no disk), so no QEMU runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReport(cmd, *output, func(ctx context.Context, log io.Writer) (reporter, error) {
				return runAPI(ctx, opts, log)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.vms, "vms", 1000, "VMs created in the timed create phase")
	f.IntVar(&opts.concurrency, "concurrency", 32, "concurrent clients for creates and raw etcd puts")
	f.IntVar(&opts.memoryVMs, "memory-vms", 10000, "VMs in total before the server's memory is read")
	f.IntVar(&opts.getSamples, "get-samples", 5000, "GET /v1/vms/{name} requests per measurement")
	f.IntVar(&opts.listSamples, "list-samples", 200, "GET /v1/vms?limit=500 requests per measurement")
	f.StringVar(&opts.transport, "transport", "tls", "how the clients reach the API: tls (127.0.0.1, admin token) or unix (the local socket)")
	f.StringVar(&opts.guestDir, "guest-dir", "", "directory of the tiny guest (default $POLYVISOR_GUEST_DIR, else .cache/guest; built with scripts/build-guest.sh when missing)")
	f.BoolVar(&opts.keep, "keep", false, "keep the temporary dir (logs, etcd) instead of removing it")
	f.DurationVar(&opts.settle, "settle", 30*time.Second, "after growing, let the server idle this long and read its memory again (0 skips)")
	return cmd
}

// reporter is a benchmark's result.
type reporter interface {
	// writeText prints the human-readable report.
	writeText(w io.Writer) error
}

// runReport runs a benchmark with a context that ends on Ctrl-C or
// SIGTERM, and prints its report as output says.
func runReport(cmd *cobra.Command, output outputFlag, run func(ctx context.Context, log io.Writer) (reporter, error)) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	return writeReport(cmd.OutOrStdout(), output, rep)
}

// writeReport prints rep as a table or as indented JSON.
func writeReport(w io.Writer, output outputFlag, rep reporter) error {
	if output == "json" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding report: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	return rep.writeText(w)
}
