package api

import "time"

// AuditSpan names a run of audit records: the segment file holding them,
// their byte range in it, and their sequence numbers. A field left out is
// not known.
type AuditSpan struct {
	Segment string `json:"segment,omitempty"`
	// Offset and End are the byte range [Offset, End) in Segment.
	Offset int64 `json:"offset,omitempty"`
	End    int64 `json:"end,omitempty"`
	// FromSeq and ToSeq are the first and last sequence numbers.
	FromSeq uint64 `json:"fromSeq,omitempty"`
	ToSeq   uint64 `json:"toSeq,omitempty"`
}

// Kinds of audit problems found by verification.
const (
	// AuditUnreadable: bytes that are not a whole record.
	AuditUnreadable = "unreadable"
	// AuditMissing: sequence numbers that are not in the log.
	AuditMissing = "missing"
	// AuditAltered: a record whose hash is not the one the next record
	// holds.
	AuditAltered = "altered"
	// AuditOutOfOrder: a sequence number at or below one seen before it.
	AuditOutOfOrder = "out-of-order"
)

// AuditProblem is something wrong with the audit log, and where.
type AuditProblem struct {
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
	Span    AuditSpan `json:"span"`
}

// AuditVerification is the result of checking the audit log's hash chain
// (GET /v1/audit/verify).
type AuditVerification struct {
	// OK is true when no problem was found.
	OK       bool  `json:"ok"`
	Segments int   `json:"segments"`
	Records  int64 `json:"records"`
	// FirstSeq and LastSeq are the sequence numbers of the oldest and
	// newest records kept.
	FirstSeq uint64 `json:"firstSeq,omitempty"`
	LastSeq  uint64 `json:"lastSeq,omitempty"`
	// Unchained counts records written before the log kept a hash chain.
	Unchained int64 `json:"unchained,omitempty"`
	// Pruned are the records before FirstSeq that retention removed, as
	// the log's own audit.prune records say.
	Pruned   *AuditSpan     `json:"pruned,omitempty"`
	Problems []AuditProblem `json:"problems"`
}

// Audit log policies when the log reaches its size limit with records
// younger than its age limit (which are never dropped for size).
const (
	AuditWhenFullAlarm  = "alarm"  // keep writing, and raise the audit-full alarm
	AuditWhenFullRefuse = "refuse" // refuse new records, and raise the alarm
)

// AuditStatus is the state of the audit log (GET /v1/audit/status).
type AuditStatus struct {
	// Writable is false while records cannot be written.
	Writable      bool   `json:"writable"`
	Bytes         int64  `json:"bytes"`
	MaxBytes      int64  `json:"maxBytes"`
	MaxAgeSeconds int64  `json:"maxAgeSeconds"`
	Segments      int    `json:"segments"`
	LastSeq       uint64 `json:"lastSeq,omitempty"`
	// WhenFull is alarm or refuse.
	WhenFull string `json:"whenFull"`
	// FailClosed: mutations are refused while records cannot be written.
	FailClosed bool `json:"failClosed"`
	// Lost counts the records that could not be written since the log
	// last could.
	Lost int64 `json:"lost,omitempty"`
	// Aggregated counts the refusals folded into counted records since the
	// server started.
	Aggregated int64   `json:"aggregated,omitempty"`
	Alarms     []Alarm `json:"alarms"`
}

// Alarm names.
const (
	AlarmAuditFull    = "audit-full"    // the audit log is over its size limit with young records
	AlarmAuditWrite   = "audit-write"   // audit records cannot be written
	AlarmAuditCorrupt = "audit-corrupt" // verification found damaged or missing records
	AlarmDiskFull     = "disk-full"     // the data disk is below its free-space reserve: read-only
	AlarmStoreQuota   = "store-quota"   // the store's database reached its quota: read-only
)

// Alarm is a condition that needs an operator (GET /v1/alarms).
type Alarm struct {
	Name    string    `json:"name"`
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
	// Path is the file or directory concerned, if any.
	Path string `json:"path,omitempty"`
}
