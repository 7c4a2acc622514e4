package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// vmCreateFlags are the flags of vm create.
type vmCreateFlags struct {
	vcpus          int
	memoryMiB      int64
	image          string
	diskSizeMiB    int64
	blankDisks     []int64
	kernel         string
	initrd         string
	cmdline        string
	firmware       string
	userData       string
	metaData       string
	networkConfig  string
	nics           []string
	labels         map[string]string
	host           string
	stopped        bool
	stopTimeout    time.Duration
	onCrash        string
	ha             string
	idempotencyKey string
	lease          time.Duration
	noWait         bool
	// In a provider's estate.
	provider  string
	template  string
	cluster   string
	datastore string
	network   string
	// The root disk as a volume.
	rootVolume       string
	rootPool         string
	deleteRootVolume bool
}

func (a *app) vmCreateCommand() *cobra.Command {
	f := vmCreateFlags{vcpus: 1, memoryMiB: 512}
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a VM, and start it unless --stopped",
		Example: "  polyvisor vm create web1 --image debian-12 --disk-size 10G --memory 2G --vcpus 2 \\\n" +
			"      --nic network=web,ip=10.0.0.5,secgroup=web \\\n" +
			"      --user-data cloud-init.yaml --label env=prod\n" +
			"  polyvisor vm create tiny --kernel vmlinuz --initrd initrd --cmdline 'console=ttyS0' --memory 256M\n" +
			"  polyvisor vm create web9 --provider vc1 --template ubuntu-22.04 --cluster C0 --datastore ds1 \\\n" +
			"      --network 'VM Network' --vcpus 2 --memory 4G",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.request(args[0])
			if err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.CreateVM(cmd.Context(), req, client.CreateOptions{IdempotencyKey: f.idempotencyKey})
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, f.noWait)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.vcpus, "vcpus", f.vcpus, "number of virtual CPUs")
	fl.Var(sizeValue{&f.memoryMiB}, "memory", "memory, e.g. 512M or 2G (a bare number is MiB)")
	fl.StringVar(&f.image, "image", "", "disk `image` of the root disk, a copy-on-write overlay")
	fl.Var(sizeValue{&f.diskSizeMiB}, "disk-size", "grow the root disk to this size, e.g. 10G (default: the image's size)")
	fl.Var(sizeListValue{&f.blankDisks}, "blank-disk", "add a blank disk of this size (repeatable)")
	fl.StringVar(&f.kernel, "kernel", "", "kernel `image` to boot directly")
	fl.StringVar(&f.initrd, "initrd", "", "initrd `image` for --kernel")
	fl.StringVar(&f.cmdline, "cmdline", "", "kernel command line for --kernel")
	fl.StringVar(&f.firmware, "firmware", "", "firmware the VM boots: bios (SeaBIOS, the default) or efi (OVMF, with an NVRAM of the VM's own)")
	fl.StringVar(&f.userData, "user-data", "", "cloud-init user-data `file`")
	fl.StringVar(&f.metaData, "meta-data", "", "cloud-init meta-data `file`")
	fl.StringVar(&f.networkConfig, "network-config", "", "cloud-init network-config `file`")
	fl.StringArrayVar(&f.nics, "nic", nil, "add a NIC: a `network` (\"user\", or one of the project's), or network=NAME,ip=ADDRESS,secgroup=GROUP,... or port=PORT (repeatable; default one on \"user\"; \"none\" for no NIC)")
	fl.Var(labelsValue{&f.labels}, "label", "add a label (repeatable)")
	fl.StringVar(&f.host, "host", "", "place the VM on this host (default: the scheduler chooses)")
	fl.BoolVar(&f.stopped, "stopped", false, "create the VM without starting it")
	fl.DurationVar(&f.stopTimeout, "stop-timeout", 0, "how long a graceful stop may take before it is forced (default: the server's)")
	fl.StringVar(&f.ha, "ha", "", "restart: restarted on another host when its host is lost (a VM with no disks of its own, only volumes of a shared pool); none (default: the project's)")
	fl.StringVar(&f.onCrash, "on-crash", "", "what the host does when the VM crashes: restart (the server's default) or stop")
	fl.StringVar(&f.idempotencyKey, "idempotency-key", "", "a retried create with the same key makes no second VM")
	fl.Var(durationValue{&f.lease}, "lease", "give the VM a lease: stopped this long after its create (72h, 7d), deleted after the project's grace period (default: the project's maximum lease, if any)")
	fl.StringVar(&f.provider, "provider", "", "create the VM in this provider's estate (vSphere, libvirt) rather than on a Polyvisor host")
	fl.StringVar(&f.template, "template", "", "with --provider: the `template` to clone (vSphere: name or inventory path; libvirt: image path on the host)")
	fl.StringVar(&f.cluster, "cluster", "", "with --provider: the `cluster` to place the VM in (name or id)")
	fl.StringVar(&f.datastore, "datastore", "", "with --provider: the `datastore` for the VM's disks")
	fl.StringVar(&f.network, "network", "", "the `network` of the first NIC (with --provider: one of its networks)")
	fl.StringVar(&f.rootVolume, "root-volume", "", "boot from this `volume` of the project (ready, not attached): the VM's root disk, detached (not deleted) when the VM is deleted")
	fl.StringVar(&f.rootPool, "root-pool", "", "with --image: make the root disk a volume \"NAME-root\" in this `pool` (a copy of the image, --disk-size grows it); it outlives the VM unless --delete-root-volume")
	fl.BoolVar(&f.deleteRootVolume, "delete-root-volume", false, "with --root-pool: delete the root volume when the VM is deleted")
	addNoWait(cmd, &f.noWait)
	return cmd
}

// request builds the VMCreate of the flags, reading the cloud-init files.
func (f *vmCreateFlags) request(name string) (api.VMCreate, error) {
	req := api.VMCreate{
		Name:      name,
		Labels:    f.labels,
		VCPUs:     f.vcpus,
		MemoryMiB: f.memoryMiB,
		Host:      f.host,
		Boot:      api.Boot{Kernel: f.kernel, Initrd: f.initrd, Cmdline: f.cmdline, Firmware: f.firmware},
	}
	if f.vcpus < 1 {
		return req, usagef("--vcpus: must be at least 1")
	}
	if f.stopTimeout < 0 {
		return req, usagef("--stop-timeout: must not be negative")
	}
	req.StopTimeoutSeconds = int((f.stopTimeout + time.Second - 1) / time.Second)
	switch f.ha {
	case "", api.HARestart, api.HANone:
		req.HA = f.ha
	default:
		return req, usagef("--ha: must be restart or none, not %q", f.ha)
	}
	switch f.onCrash {
	case "", api.OnCrashRestart, api.OnCrashStop:
		req.OnCrash = f.onCrash
	default:
		return req, usagef("--on-crash: must be restart or stop, not %q", f.onCrash)
	}
	req.LeaseSeconds = seconds(f.lease)
	switch f.firmware {
	case "", api.FirmwareBIOS, api.FirmwareEFI:
	default:
		return req, usagef("--firmware: must be %s or %s, not %q", api.FirmwareBIOS, api.FirmwareEFI, f.firmware)
	}
	if f.kernel == "" && (f.initrd != "" || f.cmdline != "") {
		return req, usagef("--initrd and --cmdline need --kernel")
	}
	if f.stopped {
		req.PowerState = api.PowerStopped
	}
	if f.provider != "" || f.template != "" || f.cluster != "" || f.datastore != "" {
		return f.providerRequest(req)
	}
	req.RootVolume, req.RootPool, req.DeleteRootVolume = f.rootVolume, f.rootPool, f.deleteRootVolume
	switch {
	case f.rootPool != "" && f.image == "":
		return req, usagef("--root-pool: needs --image (the root volume is made from it)")
	case f.rootVolume != "" && (f.image != "" || f.diskSizeMiB > 0):
		return req, usagef("--root-volume: the VM boots from the volume; drop --image and --disk-size")
	case f.deleteRootVolume && f.rootPool == "":
		return req, usagef("--delete-root-volume: needs --root-pool (a volume named with --root-volume is never deleted with the VM)")
	case f.image != "":
		req.Disks = append(req.Disks, api.Disk{Name: "root", Image: f.image, SizeMiB: f.diskSizeMiB})
	case f.diskSizeMiB > 0:
		return req, usagef("--disk-size: needs --image (use --blank-disk for a blank disk)")
	}
	for _, size := range f.blankDisks {
		req.Disks = append(req.Disks, api.Disk{SizeMiB: size})
	}
	nics := f.nics
	if len(nics) == 0 {
		nics = []string{api.NetworkUser}
	}
	if f.network != "" {
		if len(f.nics) > 0 && f.nics[0] == "none" {
			return req, usagef("--network: conflicts with --nic none")
		}
		nics = append([]string{f.network}, f.nics...)
	}
	for _, n := range nics {
		switch {
		case n == "none" && len(nics) == 1:
		case n == "none":
			return req, usagef("--nic: none cannot be combined with other NICs")
		default:
			nic, err := parseNIC("--nic", n)
			if err != nil {
				return req, err
			}
			req.NICs = append(req.NICs, nic)
		}
	}
	ci := api.CloudInit{}
	for _, file := range []struct {
		flag, path string
		dst        *string
	}{
		{"--user-data", f.userData, &ci.UserData},
		{"--meta-data", f.metaData, &ci.MetaData},
		{"--network-config", f.networkConfig, &ci.NetworkConfig},
	} {
		if file.path == "" {
			continue
		}
		b, err := os.ReadFile(file.path)
		if err != nil {
			return req, fmt.Errorf("%s: %w", file.flag, err)
		}
		*file.dst = string(b)
	}
	if ci != (api.CloudInit{}) {
		req.CloudInit = &ci
	}
	return req, nil
}

// providerRequest finishes the VMCreate of a VM made in a provider's
// estate: from the provider's template, so with no image, kernel or
// cloud-init of Polyvisor's.
func (f *vmCreateFlags) providerRequest(req api.VMCreate) (api.VMCreate, error) {
	switch {
	case f.provider == "":
		return req, usagef("--template, --cluster and --datastore need --provider")
	case f.template == "":
		return req, usagef("--template: required with --provider")
	}
	for _, set := range []struct {
		flag string
		on   bool
	}{
		{"--image", f.image != ""}, {"--disk-size", f.diskSizeMiB > 0}, {"--blank-disk", len(f.blankDisks) > 0},
		{"--kernel", f.kernel != ""}, {"--initrd", f.initrd != ""}, {"--cmdline", f.cmdline != ""}, {"--firmware", f.firmware != ""},
		{"--user-data", f.userData != ""}, {"--meta-data", f.metaData != ""}, {"--network-config", f.networkConfig != ""},
	} {
		if set.on {
			return req, usagef("%s: a VM of provider %s is made from its template; leave %s out", set.flag, f.provider, set.flag)
		}
	}
	req.Provider, req.Template, req.Cluster, req.Datastore = f.provider, f.template, f.cluster, f.datastore
	req.Boot = api.Boot{}
	// The provider connects the first NIC to a network of its own; with
	// none given it keeps the template's (vSphere) or uses its default
	// network (libvirt).
	nics := f.nics
	if f.network != "" {
		nics = append([]string{f.network}, nics...)
	}
	switch {
	case len(nics) > 1:
		return req, usagef("--network: a VM of provider %s takes one network, its first NIC's", f.provider)
	case len(nics) == 1 && (nics[0] == "" || nics[0] == "none"):
		return req, usagef("--network: give the name of one of provider %s's networks", f.provider)
	case len(nics) == 1:
		nic, err := parseNIC("--nic", nics[0])
		if err != nil {
			return req, err
		}
		if nic.IP != "" || nic.Port != "" || len(nic.SecurityGroups) > 0 || nic.MAC != "" {
			return req, usagef("--nic: a VM of provider %s takes a network of the provider only", f.provider)
		}
		req.NICs = []api.NIC{{Network: nic.Network}}
	}
	return req, nil
}
