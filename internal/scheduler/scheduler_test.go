package scheduler

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// host builds a ready, schedulable host.
func host(name string, cpus int, memMiB int64) HostInfo {
	return HostInfo{Name: name, Ready: true, CPUs: cpus, MemoryMiB: memMiB}
}

func (h HostInfo) alloc(vcpus int, memMiB int64) HostInfo {
	h.AllocatedVCPUs, h.AllocatedMemoryMiB = vcpus, memMiB
	return h
}

func (h HostInfo) notReady() HostInfo      { h.Ready = false; return h }
func (h HostInfo) unschedulable() HostInfo { h.Unschedulable = true; return h }

// noReserve keeps the arithmetic of the tests simple.
var noReserve = Config{ReservedMemoryMiB: -1}

func TestPlace(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		hosts []HostInfo
		req   Request
		want  string
		// wantErr is a substring of the error; the error's type is checked
		// through wantNoRoom / wantUnknown.
		wantErr     string
		wantNoRoom  bool
		wantUnknown bool
	}{
		{
			name:  "single host fits",
			cfg:   noReserve,
			hosts: []HostInfo{host("h1", 2, 4096)},
			req:   Request{VCPUs: 1, MemoryMiB: 1024},
			want:  "h1",
		},
		{
			name:  "spread to the most free memory",
			cfg:   noReserve,
			hosts: []HostInfo{host("h1", 4, 8192).alloc(1, 6144), host("h2", 4, 8192).alloc(3, 1024), host("h3", 4, 8192).alloc(0, 4096)},
			req:   Request{VCPUs: 1, MemoryMiB: 512},
			want:  "h2",
		},
		{
			name:  "tie broken by name",
			cfg:   noReserve,
			hosts: []HostInfo{host("hb", 4, 8192), host("hc", 4, 8192), host("ha", 4, 8192)},
			req:   Request{VCPUs: 1, MemoryMiB: 512},
			want:  "ha",
		},
		{
			name:  "skips not ready and unschedulable hosts even with more room",
			cfg:   noReserve,
			hosts: []HostInfo{host("big1", 16, 65536).notReady(), host("big2", 16, 65536).unschedulable(), host("small", 2, 2048)},
			req:   Request{VCPUs: 1, MemoryMiB: 1024},
			want:  "small",
		},
		{
			name:  "skips the host with most memory when its vcpus are used up",
			cfg:   Config{CPUOvercommit: 1, ReservedMemoryMiB: -1},
			hosts: []HostInfo{host("roomy", 2, 65536).alloc(2, 0), host("tight", 2, 2048)},
			req:   Request{VCPUs: 1, MemoryMiB: 1024},
			want:  "tight",
		},
		{
			name:       "no room anywhere explains every host",
			cfg:        Config{CPUOvercommit: 1, ReservedMemoryMiB: -1},
			hosts:      []HostInfo{host("h2", 4, 8192).alloc(2, 0), host("h1", 8, 1024), host("h3", 2, 8192), host("h4", 8, 8192).notReady()},
			req:        Request{VCPUs: 4, MemoryMiB: 2048},
			wantNoRoom: true,
			wantErr:    "h1: needs 2048 MiB memory, 1024 MiB free; h2: needs 4 vcpus, 2 free; h3: needs 4 vcpus, host has 2 cpus; h4: not ready",
		},
		{
			name:       "no hosts at all",
			req:        Request{VCPUs: 1, MemoryMiB: 1},
			wantNoRoom: true,
			wantErr:    "there are no hosts",
		},
		{
			name:  "pin honoured over a roomier host",
			cfg:   noReserve,
			hosts: []HostInfo{host("h1", 2, 2048), host("h2", 16, 65536)},
			req:   Request{VCPUs: 1, MemoryMiB: 1024, Host: "h1"},
			want:  "h1",
		},
		{
			name:        "pin to an unknown host",
			hosts:       []HostInfo{host("h1", 2, 2048)},
			req:         Request{VCPUs: 1, MemoryMiB: 1024, Host: "nope"},
			wantUnknown: true,
			wantErr:     `host "nope" not found`,
		},
		{
			name:       "pin to a full host explains",
			cfg:        Config{CPUOvercommit: 1, ReservedMemoryMiB: -1},
			hosts:      []HostInfo{host("h1", 4, 8192).alloc(2, 0), host("h2", 16, 65536)},
			req:        Request{VCPUs: 4, MemoryMiB: 1024, Host: "h1"},
			wantNoRoom: true,
			wantErr:    `host "h1" cannot take the vm: needs 4 vcpus, 2 free`,
		},
		{
			name:       "pin to a host that is not ready",
			hosts:      []HostInfo{host("h1", 4, 8192).notReady()},
			req:        Request{VCPUs: 1, MemoryMiB: 512, Host: "h1"},
			wantNoRoom: true,
			wantErr:    `host "h1" cannot take the vm: not ready`,
		},
		{
			name:       "pin to an unschedulable host",
			hosts:      []HostInfo{host("h1", 4, 8192).unschedulable()},
			req:        Request{VCPUs: 1, MemoryMiB: 512, Host: "h1"},
			wantNoRoom: true,
			wantErr:    `host "h1" cannot take the vm: unschedulable`,
		},
		{
			name:  "default reservation keeps 256 MiB for the host",
			hosts: []HostInfo{host("h1", 2, 2048)},
			req:   Request{VCPUs: 1, MemoryMiB: 1792},
			want:  "h1",
		},
		{
			name:       "default reservation refuses one MiB more",
			hosts:      []HostInfo{host("h1", 2, 2048)},
			req:        Request{VCPUs: 1, MemoryMiB: 1793},
			wantNoRoom: true,
			wantErr:    "needs 1793 MiB memory, 1792 MiB free",
		},
		{
			name:  "default cpu overcommit of 4",
			hosts: []HostInfo{host("h1", 2, 65536).alloc(6, 0)},
			req:   Request{VCPUs: 2, MemoryMiB: 512},
			want:  "h1",
		},
		{
			name:       "default cpu overcommit exhausted",
			hosts:      []HostInfo{host("h1", 2, 65536).alloc(7, 0)},
			req:        Request{VCPUs: 2, MemoryMiB: 512},
			wantNoRoom: true,
			wantErr:    "needs 2 vcpus, 1 free",
		},
		{
			name:  "memory overcommit",
			cfg:   Config{MemoryOvercommit: 1.5, ReservedMemoryMiB: 1024},
			hosts: []HostInfo{host("h1", 8, 5120).alloc(0, 4096)},
			req:   Request{VCPUs: 1, MemoryMiB: 2048}, // (5120-1024)*1.5 = 6144, 2048 free
			want:  "h1",
		},
		{
			name:       "over-allocated host reports zero free",
			cfg:        Config{MemoryOvercommit: 1, ReservedMemoryMiB: -1},
			hosts:      []HostInfo{host("h1", 8, 4096).alloc(40, 8192)},
			req:        Request{VCPUs: 1, MemoryMiB: 1},
			wantNoRoom: true,
			wantErr:    "needs 1 vcpus, 0 free",
		},
		{
			name:    "zero vcpus is invalid",
			hosts:   []HostInfo{host("h1", 2, 2048)},
			req:     Request{VCPUs: 0, MemoryMiB: 512},
			wantErr: "vcpus must be at least 1",
		},
		{
			name:    "zero memory is invalid",
			hosts:   []HostInfo{host("h1", 2, 2048)},
			req:     Request{VCPUs: 1},
			wantErr: "memory must be at least 1 MiB",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Place(tt.cfg, Snapshot{Hosts: tt.hosts}, tt.req)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Place: %v", err)
				}
				if got != tt.want {
					t.Fatalf("Place = %q, want %q", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Place = %q, want an error containing %q", got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
			var noRoom *NoRoomError
			if errors.As(err, &noRoom) != tt.wantNoRoom {
				t.Errorf("errors.As(*NoRoomError) = %v, want %v (%T)", !tt.wantNoRoom, tt.wantNoRoom, err)
			}
			var unknown *UnknownHostError
			if errors.As(err, &unknown) != tt.wantUnknown {
				t.Errorf("errors.As(*UnknownHostError) = %v, want %v (%T)", !tt.wantUnknown, tt.wantUnknown, err)
			}
		})
	}
}

func TestNoRoomErrorDetails(t *testing.T) {
	_, err := Place(noReserve, Snapshot{Hosts: []HostInfo{host("a", 1, 512), host("b", 1, 512).notReady()}},
		Request{VCPUs: 1, MemoryMiB: 1024})
	var noRoom *NoRoomError
	if !errors.As(err, &noRoom) {
		t.Fatalf("want *NoRoomError, got %v", err)
	}
	d := noRoom.Details()
	if d["a"] != "needs 1024 MiB memory, 512 MiB free" || d["b"] != "not ready" || len(d) != 2 {
		t.Fatalf("Details = %v", d)
	}
}

func TestHostCapacity(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		h    HostInfo
		want Capacity
	}{
		{"defaults", Config{}, host("h", 2, 2048).alloc(3, 1000),
			Capacity{VCPUs: 8, MemoryMiB: 1792, FreeVCPUs: 5, FreeMemoryMiB: 792}},
		{"fractional cpu overcommit rounds down", Config{CPUOvercommit: 1.5}, host("h", 3, 1024),
			Capacity{VCPUs: 4, MemoryMiB: 768, FreeVCPUs: 4, FreeMemoryMiB: 768}},
		{"float error does not lose a vcpu", Config{CPUOvercommit: 0.29}, host("h", 100, 1024),
			Capacity{VCPUs: 29, MemoryMiB: 768, FreeVCPUs: 29, FreeMemoryMiB: 768}},
		{"no overcommit", Config{CPUOvercommit: 1, MemoryOvercommit: 1, ReservedMemoryMiB: -1}, host("h", 4, 4096),
			Capacity{VCPUs: 4, MemoryMiB: 4096, FreeVCPUs: 4, FreeMemoryMiB: 4096}},
		{"memory overcommit after reservation", Config{MemoryOvercommit: 1.5, ReservedMemoryMiB: 1024}, host("h", 1, 3072),
			Capacity{VCPUs: 4, MemoryMiB: 3072, FreeVCPUs: 4, FreeMemoryMiB: 3072}},
		{"reservation above memory", Config{ReservedMemoryMiB: 4096}, host("h", 1, 1024),
			Capacity{VCPUs: 4, MemoryMiB: 0, FreeVCPUs: 4, FreeMemoryMiB: 0}},
		{"over-allocated goes negative", Config{CPUOvercommit: 1, ReservedMemoryMiB: -1}, host("h", 2, 1024).alloc(3, 2048),
			Capacity{VCPUs: 2, MemoryMiB: 1024, FreeVCPUs: -1, FreeMemoryMiB: -1024}},
		{"negative overcommit means default", Config{CPUOvercommit: -2, MemoryOvercommit: -1, ReservedMemoryMiB: 0}, host("h", 1, 1280),
			Capacity{VCPUs: 4, MemoryMiB: 1024, FreeVCPUs: 4, FreeMemoryMiB: 1024}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HostCapacity(tt.cfg, tt.h); got != tt.want {
				t.Fatalf("HostCapacity = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestPlaceDeterministic shuffles the same snapshot many ways: the choice
// and the error text must not depend on the order of the hosts.
func TestPlaceDeterministic(t *testing.T) {
	hosts := []HostInfo{
		host("h1", 4, 8192).alloc(0, 2048),
		host("h2", 4, 8192).alloc(0, 2048),
		host("h3", 4, 8192).alloc(0, 2048),
		host("h4", 4, 8192).alloc(0, 1024).notReady(),
		host("h5", 4, 4096),
	}
	full := []HostInfo{host("x3", 1, 512), host("x1", 1, 512).notReady(), host("x2", 1, 512).unschedulable()}
	r := rand.New(rand.NewPCG(1, 2))
	var firstErr string
	for i := range 200 {
		r.Shuffle(len(hosts), func(a, b int) { hosts[a], hosts[b] = hosts[b], hosts[a] })
		got, err := Place(noReserve, Snapshot{Hosts: hosts}, Request{VCPUs: 2, MemoryMiB: 1024})
		if err != nil || got != "h1" {
			t.Fatalf("shuffle %d: Place = %q, %v; want h1", i, got, err)
		}
		r.Shuffle(len(full), func(a, b int) { full[a], full[b] = full[b], full[a] })
		_, err = Place(noReserve, Snapshot{Hosts: full}, Request{VCPUs: 1, MemoryMiB: 1024})
		if err == nil {
			t.Fatal("Place on full hosts succeeded")
		}
		if firstErr == "" {
			firstErr = err.Error()
		} else if err.Error() != firstErr {
			t.Fatalf("shuffle %d: error %q differs from %q", i, err, firstErr)
		}
	}
	if want := "x1: not ready; x2: unschedulable; x3: needs 1024 MiB memory, 512 MiB free"; !strings.Contains(firstErr, want) {
		t.Fatalf("error %q does not contain %q", firstErr, want)
	}
}

// TestPlaceFillsCluster places VMs one by one, feeding each choice back into
// the snapshot as the server would, and checks they spread evenly and stop
// exactly when the cluster is full.
func TestPlaceFillsCluster(t *testing.T) {
	snap := Snapshot{Hosts: []HostInfo{host("a", 2, 4096), host("b", 2, 4096), host("c", 2, 4096)}}
	cfg := Config{CPUOvercommit: 2, ReservedMemoryMiB: 1024} // per host: 4 vcpus, 3072 MiB
	var placed []string
	for {
		h, err := Place(cfg, snap, Request{VCPUs: 1, MemoryMiB: 1024})
		if err != nil {
			var noRoom *NoRoomError
			if !errors.As(err, &noRoom) {
				t.Fatalf("want *NoRoomError when full, got %v", err)
			}
			break
		}
		placed = append(placed, h)
		i := slices.IndexFunc(snap.Hosts, func(x HostInfo) bool { return x.Name == h })
		snap.Hosts[i].AllocatedVCPUs++
		snap.Hosts[i].AllocatedMemoryMiB += 1024
		if len(placed) > 100 {
			t.Fatal("placement never stops")
		}
	}
	want := []string{"a", "b", "c", "a", "b", "c", "a", "b", "c"}
	if fmt.Sprint(placed) != fmt.Sprint(want) {
		t.Fatalf("placements = %v, want %v", placed, want)
	}
}

func TestMax(t *testing.T) {
	if MaxVCPUs(Snapshot{}) != 0 || MaxMemoryMiB(Snapshot{}) != 0 {
		t.Fatal("empty snapshot must offer nothing")
	}
	snap := Snapshot{Hosts: []HostInfo{
		host("a", 4, 2048).alloc(4, 2048),
		host("b", 16, 1024).notReady(),
		host("c", 2, 65536).unschedulable(),
	}}
	if got := MaxVCPUs(snap); got != 16 {
		t.Errorf("MaxVCPUs = %d, want 16", got)
	}
	if got := MaxMemoryMiB(snap); got != 65536 {
		t.Errorf("MaxMemoryMiB = %d, want 65536", got)
	}
	// A VM above MaxVCPUs can never be placed, even on an empty host with
	// a large overcommit.
	_, err := Place(Config{CPUOvercommit: 100}, Snapshot{Hosts: []HostInfo{host("a", 4, 8192)}}, Request{VCPUs: 5, MemoryMiB: 1})
	if err == nil || !strings.Contains(err.Error(), "needs 5 vcpus, host has 4 cpus") {
		t.Fatalf("Place = %v, want a refusal for more vcpus than cpus", err)
	}
}

// TestChoicesPickAmongTheBest: with Choices, the seed picks one of the
// Choices hosts with the most free memory (ties by name), in that order,
// as sorting every fitting host would — on fleets with ties and hosts
// that do not fit.
func TestChoicesPickAmongTheBest(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	cfg := Config{}.withDefaults()
	for round := range 200 {
		n := 1 + rng.IntN(60)
		snap := Snapshot{}
		for i := range n {
			snap.Hosts = append(snap.Hosts, HostInfo{
				Name: fmt.Sprintf("h%03d", i), Ready: rng.IntN(10) > 0, CPUs: 8,
				MemoryMiB: 16384, AllocatedMemoryMiB: int64(rng.IntN(8)) * 2048,
			})
		}
		req := Request{VCPUs: 1, MemoryMiB: 1024, Choices: 1 + rng.IntN(6), Seed: rng.Uint64()}
		type fit struct {
			name string
			free int64
		}
		var fits []fit
		for _, h := range snap.Hosts {
			if refusal(cfg, h, req) == "" {
				fits = append(fits, fit{h.Name, HostCapacity(cfg, h).FreeMemoryMiB})
			}
		}
		got, err := Place(cfg, snap, req)
		if len(fits) == 0 {
			if err == nil {
				t.Fatalf("round %d: placed on %s where nothing fits", round, got)
			}
			continue
		}
		slices.SortFunc(fits, func(a, b fit) int {
			if c := cmp.Compare(b.free, a.free); c != 0 {
				return c
			}
			return cmp.Compare(a.name, b.name)
		})
		want := fits[req.Seed%uint64(min(req.Choices, len(fits)))].name
		if err != nil || got != want {
			t.Fatalf("round %d (%d hosts, %d choices): %s, %v; want %s", round, n, req.Choices, got, err, want)
		}
	}
}

// TestSampleSize: small fleets are looked at whole; larger ones by a share
// that shrinks with the fleet to 5 %, never below MinSample hosts, or by
// the configured share.
func TestSampleSize(t *testing.T) {
	for _, tc := range []struct {
		pct, n, want int
	}{
		{0, 0, 0},
		{0, 1, 1},
		{0, 100, 100},
		{0, 101, 100},   // 50 % of 101 is 50: at least MinSample
		{0, 1000, 420},  // 50-8 = 42 %
		{0, 5000, 500},  // 50-40 = 10 %
		{0, 10000, 500}, // 50-80 < 5: 5 %
		{0, 100000, 5000},
		{10, 10000, 1000},
		{1, 10000, 100}, // 1 % is 100: MinSample anyway
		{100, 10000, 10000},
		{250, 10000, 10000},
		{10, 50, 50},
	} {
		if got := SampleSize(Config{SamplePercent: tc.pct}, tc.n); got != tc.want {
			t.Errorf("SampleSize(%d %%, %d hosts) = %d, want %d", tc.pct, tc.n, got, tc.want)
		}
	}
}
