package agent

import (
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// The agent fences T_fence after the sending of its last answered
// heartbeat, not after the answer; it unfences only once the server says
// the host is not fenced and a watch opened after that has synced.
func TestFencerTimeline(t *testing.T) {
	var f fencer
	t0 := time.Now()
	host := &api.Host{FenceTimeoutMS: 3000}
	if f.due(t0.Add(time.Hour)) {
		t.Fatal("due before the server said T_fence")
	}
	f.answered(t0, host) // sent at t0, answered later
	if f.due(t0.Add(2999 * time.Millisecond)) {
		t.Error("due before T_fence")
	}
	if !f.due(t0.Add(3 * time.Second)) {
		t.Error("not due at T_fence from the sending")
	}
	// An answer to an older heartbeat does not move the contact back.
	f.answered(t0.Add(-time.Second), host)
	if !f.due(t0.Add(3 * time.Second)) {
		t.Error("an older heartbeat's answer moved the contact back")
	}
	f.fenced = true
	if f.due(t0.Add(time.Hour)) {
		t.Error("due again while fenced")
	}
	// The server still fences the host: no unfencing.
	if f.answered(t0.Add(5*time.Second), &api.Host{FenceTimeoutMS: 3000, Fence: &api.HostFence{State: api.FencePending}}) {
		t.Error("unfenced while the server's record is pending")
	}
	if f.synced(time.Now().Add(time.Hour)) || !f.isFenced() {
		t.Error("a sync ended the fencing before the server said so")
	}
	// The server says the host returned: a watch opened before that
	// answer does not end the fencing, one opened after does.
	before := time.Now()
	time.Sleep(time.Millisecond)
	if !f.answered(t0.Add(6*time.Second), &api.Host{FenceTimeoutMS: 3000, Fence: &api.HostFence{State: api.FenceReturned}}) {
		t.Fatal("the server's returned record did not ask for a new watch")
	}
	if f.synced(before) || !f.isFenced() {
		t.Error("a watch opened before the answer ended the fencing")
	}
	if !f.synced(time.Now()) || f.isFenced() {
		t.Error("a watch opened after the answer did not end the fencing")
	}
}

// Once T_fence has passed since the last answered heartbeat was sent,
// HA VMs may not start here even before the fence loop ran: the keeper
// may have killed them, and a crash restart must not bring one back.
func TestFencerDueRefusesHAStarts(t *testing.T) {
	var f fencer
	f.answered(time.Now().Add(-4*time.Second), &api.Host{FenceTimeoutMS: 3000})
	if !f.isFenced() {
		t.Error("HA starts allowed T_fence after the last contact")
	}
	f.answered(time.Now(), &api.Host{FenceTimeoutMS: 3000})
	if f.isFenced() {
		t.Error("HA starts refused with a fresh contact")
	}
}
