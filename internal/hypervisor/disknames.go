package hypervisor

import (
	"fmt"
	"slices"
)

// A VM's disk names become file names on its host, serials its guest sees
// (/dev/disk/by-id), and sit beside what a driver attaches on its own. The
// server checks a create request with CheckDiskNames and the driver checks
// its VMConfig with the same function, so a name the API accepts is never
// refused by the driver.

// DiskSerialLen is how much of a disk's name the guest sees as its serial:
// virtio-blk serials hold 20 characters.
const DiskSerialLen = 20

// ReservedDiskNames are the names of what drivers attach beside a VM's
// disks: the NoCloud seed disk is "seed" (its node and file on the host)
// and its serial is "cidata".
var ReservedDiskNames = []string{"seed", "cidata"}

// DiskNameError says which of a VM's disks has a name that cannot be used.
type DiskNameError struct {
	Index  int    // the disk at fault, in the VM's order
	Name   string // its name
	Reason string // why, as a sentence fragment
}

func (e *DiskNameError) Error() string {
	return fmt.Sprintf("disk %d: name %q %s", e.Index, e.Name, e.Reason)
}

// CheckDiskNames checks the names of a VM's disks, in order, against one
// another and what drivers reserve: no reserved name, no name twice, and no
// two names that share their first DiskSerialLen characters (the guest would
// see one serial for both). It returns a *DiskNameError naming the first
// disk at fault. The syntax of each name is the caller's to check.
func CheckDiskNames(names []string) error {
	serials := map[string]int{}
	for i, n := range names {
		if slices.Contains(ReservedDiskNames, n) {
			return &DiskNameError{Index: i, Name: n, Reason: "is reserved (the NoCloud seed disk uses it)"}
		}
		s := DiskSerial(n)
		if j, ok := serials[s]; ok {
			if names[j] == n {
				return &DiskNameError{Index: i, Name: n, Reason: fmt.Sprintf("is used twice (disk %d has it too)", j)}
			}
			return &DiskNameError{Index: i, Name: n, Reason: fmt.Sprintf(
				"begins with the same %d characters as disk %d's name %q, which the guest sees as both disks' serial %q",
				DiskSerialLen, j, names[j], s)}
		}
		serials[s] = i
	}
	return nil
}

// DiskSerial is the serial a guest sees for a disk named name.
func DiskSerial(name string) string {
	if len(name) > DiskSerialLen {
		return name[:DiskSerialLen]
	}
	return name
}
