package api

import "time"

// Balancing modes (BalanceSettings.Mode).
const (
	// BalanceOff: no cycles run (the default).
	BalanceOff = "off"
	// BalanceAdvise: cycles run and keep their recommendations, which a
	// superadmin may apply one by one.
	BalanceAdvise = "advise"
	// BalanceAutomatic: cycles carry out their recommendations as
	// migrate operations.
	BalanceAutomatic = "automatic"
)

// Kinds of a balancing move (BalanceMove.Kind).
const (
	// BalanceHotspot: the source host is over the hotspot threshold.
	BalanceHotspot = "hotspot"
	// BalanceImbalance: the spread of the hosts' load is over what the
	// aggressiveness tolerates.
	BalanceImbalance = "imbalance"
	// BalancePower: the move empties a lightly loaded host (power-saving
	// mode).
	BalancePower = "power"
)

// Defaults and bounds of the balance settings.
const (
	DefaultBalanceAggressiveness   = 3
	DefaultBalanceMaxMoves         = 4
	DefaultBalanceIntervalSeconds  = 300
	DefaultBalanceCooldownSeconds  = 3600
	DefaultBalanceHotspotThreshold = 0.8
	MinBalanceIntervalSeconds      = 1
	MaxBalanceIntervalSeconds      = 86400
	MaxBalanceMaxMoves             = 64
	MaxBalanceCooldownSeconds      = 7 * 86400
)

// BalanceSettings are the installation's balancing settings (PUT
// /v1/balance). Zero fields take their defaults.
type BalanceSettings struct {
	// Mode is off, advise or automatic.
	Mode string `json:"mode"`
	// Aggressiveness is 1 (only hotspots) to 5 (acts on a small
	// imbalance); default 3.
	Aggressiveness int `json:"aggressiveness,omitempty"`
	// MaxMoves is the move budget of one cycle; default 4.
	MaxMoves int `json:"maxMoves,omitempty"`
	// IntervalSeconds is the time between cycles; default 300.
	IntervalSeconds int `json:"intervalSeconds,omitempty"`
	// CooldownSeconds is how long a VM that moved (by the balancer or
	// anyone) is left where it is; default 3600.
	CooldownSeconds int `json:"cooldownSeconds,omitempty"`
	// HotspotThreshold is the share of a host's CPU or memory above which
	// it is a hotspot, in (0, 1]; default 0.8. No move fills a host past it.
	HotspotThreshold float64 `json:"hotspotThreshold,omitempty"`
	// PowerSaving also empties lightly loaded hosts, so they can be
	// powered off.
	PowerSaving bool `json:"powerSaving,omitempty"`
}

// BalanceLoad is a host's load: the share of its CPU and of its memory
// the demand of its VMs takes.
type BalanceLoad struct {
	CPU    float64 `json:"cpu"`
	Memory float64 `json:"memory"`
}

// BalanceMove is one recommended live migration, with why and what it
// gains.
type BalanceMove struct {
	// ID names the move (the same VM, source and target give the same
	// id); POST /v1/balance/recommendations/{id}/apply carries it out.
	ID string `json:"id"`
	// VM is the VM's key (project/name).
	VM   string `json:"vm"`
	From string `json:"from"`
	To   string `json:"to"`
	// Kind is hotspot, imbalance or power.
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
	// Demand is what the VM uses (cores, MiB), and where that figure
	// came from: measured, or allocation when nothing was measured.
	Demand       PlanUsage `json:"demand"`
	DemandSource string    `json:"demandSource"`
	// Gain is the decrease of the balancer's cost (the squared spread of
	// host loads, plus hotspot overshoot) the move brings.
	Gain float64 `json:"gain"`
	// ImbalanceBefore and ImbalanceAfter are the standard deviation of
	// the hosts' load before and after the move (CPU and memory combined).
	ImbalanceBefore float64     `json:"imbalanceBefore"`
	ImbalanceAfter  float64     `json:"imbalanceAfter"`
	FromBefore      BalanceLoad `json:"fromBefore"`
	FromAfter       BalanceLoad `json:"fromAfter"`
	ToBefore        BalanceLoad `json:"toBefore"`
	ToAfter         BalanceLoad `json:"toAfter"`
	// Operation is the migrate operation that carries the move out, once
	// one does.
	Operation string `json:"operation,omitempty"`
}

// BalanceHost is a host as the last cycle saw it.
type BalanceHost struct {
	Name string      `json:"name"`
	Load BalanceLoad `json:"load"`
	VMs  int         `json:"vms"`
	// Excluded says why the host takes no part (cordoned, not ready).
	Excluded string `json:"excluded,omitempty"`
}

// BalanceCycle is what one balancing cycle saw and did.
type BalanceCycle struct {
	At time.Time `json:"at"`
	// Mode is the mode the cycle ran in.
	Mode string `json:"mode"`
	// Imbalance is the standard deviation of the hosts' load at the
	// cycle's start; ImbalanceAfter once its moves are made.
	Imbalance      float64 `json:"imbalance"`
	ImbalanceAfter float64 `json:"imbalanceAfter"`
	// Measured counts the VMs whose demand was measured; the others are
	// counted at their allocation.
	Measured int           `json:"measured"`
	VMs      int           `json:"vms"`
	Hosts    []BalanceHost `json:"hosts"`
	// Started are the migrate operations an automatic cycle started.
	Started []string `json:"started,omitempty"`
	// Notes say what the cycle could not do (a sample that failed, a
	// move refused).
	Notes []string `json:"notes,omitempty"`
}

// Balance is the balancer's state (GET /v1/balance): its settings, its
// last cycle and the moves it recommends now.
type Balance struct {
	Settings        BalanceSettings `json:"settings"`
	LastCycle       *BalanceCycle   `json:"lastCycle,omitempty"`
	Recommendations []BalanceMove   `json:"recommendations"`
}
