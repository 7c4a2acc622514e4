package agent

import (
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestIncomingVolumes: a migration's target plugs each volume into the
// port the source reports it in, the ones the source did not report last
// (into the ports left free), with the spec's paths, exports and limits;
// the root volume is not plugged (the target opens it at start).
func TestIncomingVolumes(t *testing.T) {
	vm := &api.VM{
		Spec: api.VMSpec{Volumes: []api.VolumeAttachment{
			{Volume: "a", Path: "/p/a.qcow2", Limits: api.VolumeLimits{IOPS: 5}},
			{Volume: "root", Path: "/p/root.qcow2", Boot: true},
			{Volume: "b", Path: "/p/b.qcow2", Export: "nbd://10.0.0.1:10809/b"},
			{Volume: "c", Path: "/p/c.qcow2", Limits: api.VolumeLimits{BPS: 7}},
		}},
		Status: api.VMStatus{Volumes: []api.VolumeAttachmentStatus{
			{Volume: "a", Port: "pvslot10"},
			{Volume: "c", Port: "pvslot2"},
		}},
	}
	got := incomingVolumes(vm)
	want := []struct{ name, path, port string }{{"c", "/p/c.qcow2", "pvslot2"}, {"a", "/p/a.qcow2", "pvslot10"}, {"b", "/p/b.qcow2", ""}}
	if len(got) != len(want) {
		t.Fatalf("incoming volumes %+v", got)
	}
	for i, w := range want {
		if got[i].Name != w.name || got[i].Path != w.path || got[i].Port != w.port {
			t.Errorf("volume %d: %+v, want %+v", i, got[i], w)
		}
	}
	if got[2].Export != "nbd://10.0.0.1:10809/b" {
		t.Errorf("the nbd volume's export was lost: %+v", got[2])
	}
	if got[1].IOPS != 5 || got[0].BPS != 7 {
		t.Errorf("limits lost: %+v", got)
	}
}
