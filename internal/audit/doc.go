// Package audit is the server's append-only audit log: who asked for what,
// when, and how it ended, kept on the server's local disk.
//
// # Format
//
// The log is a directory (mode 0700) of segment files (mode 0600):
//
//	audit-<start>.jsonl
//
// where <start> is the time of the segment's first record in Unix
// nanoseconds, zero-padded to 20 digits, so that the names sort in time
// order. (When a segment would get the same start as the one before it, or
// an earlier one, its start is the previous start plus one nanosecond, so
// names stay unique and ascending.) Each line of a segment is one
// api.AuditRecord encoded as a JSON object and ended by "\n"; a record takes
// at most 1 MiB, and each of its fields is cut to its bound before it is
// written (Bound: names 256 bytes, the path 1 KiB, the message 2 KiB), with
// a marker giving the length it had. Records are appended to the newest segment only; when it
// has reached Options.SegmentBytes the next record starts a new one.
//
// # Hash chain
//
// Every record carries a sequence number (Seq: 1 for the first, one more
// for each after) and the SHA-256 of the line of the record before it
// (Prev), across segments: the records form one chain. Verify (run in the
// background at Open, and by polyvisor audit verify) follows the chain
// through every segment and reports what is lost or damaged and where: the
// segment, the byte range, the sequence numbers. Queries check the chain
// of each segment they read, and log what they cannot read instead of
// skipping it silently. Damage raises the audit-corrupt alarm. The chain
// has no secret: it finds damage and crude tampering, not an intruder who
// rewrites the files and recomputes it.
//
// Every record gets an ID of 24 hex digits: 16 for the Unix nanoseconds at
// which it was written and 8 random ones. The nanoseconds strictly increase
// from one record to the next (the clock is nudged forward by a nanosecond
// when it has not moved, or moved back by less than a minute), so IDs sort
// in the order the records were written. A record given without a Time gets
// that same instant as its Time. The log keeps records in the order they
// were appended and assumes that this is their time order (within a few
// minutes for records whose Time the caller set): queries skip segments by
// time on that basis, and return records in file order.
//
// # Durability
//
// Appends are committed in groups: one goroutine takes every record waiting
// at that moment, writes them with one write and syncs the file once, and
// each Append returns only after its record is on disk. A new segment's
// directory entry is synced before any record in it is acknowledged. If the
// process dies during a write, the newest segment can end with a partial
// line; Open cuts the segment back to its last complete, well-formed record
// (nothing after it had been acknowledged) and appending goes on from there.
//
// When a write fails (a full disk), the segment is cut back to its last
// good byte, the chain does not advance, Append returns the error, and the
// log raises the audit-write alarm and counts the records it could not
// write. It retries every Options.RetryInterval; the first record written
// after an outage is its account (action audit.outage, with Count, First
// and Last). A record appended with AppendKept (the record of a revocation
// or deletion the server carried out all the same) is not lost but kept in
// memory, up to a bound, and written right after that account. Writable says whether records can be written now: the server
// refuses mutations while they cannot, when it is set to fail closed.
//
// # Retention
//
// The oldest whole segments are deleted while the newest record of the
// oldest segment is older than Options.MaxAge; the segment being written to
// is never deleted. Each removal is recorded (action audit.prune, naming
// the segment and the sequence numbers it held), so that verification
// tells records retention removed from records lost. Size never removes a
// record younger than MaxAge: past Options.MaxBytes the log raises the
// audit-full alarm and keeps writing (WhenFull "alarm"), or refuses new
// records until age makes room (WhenFull "refuse"). A flood of records
// therefore cannot push real ones out. Retention runs when the log is
// opened, whenever a new segment is started, and on each call to
// Log.Prune, which the server calls periodically.
//
// # Aggregation
//
// An Aggregator in front of the log folds repeated records (the server
// folds refusals and failures by client address, caller, route, status and
// project): per key and window, the first few are written and the rest
// counted into one record written when the window ends. Past its bound of
// keys, records fold by action, outcome and status, and their count names
// a sample of the addresses, callers and actions it holds. With AppendAs,
// one caller's keys and records written one by one are bounded per window
// too: past its keys its records share one count of its own, so varying
// the route or answer does not escape folding.
//
// Nothing is kept in memory beyond a few numbers per segment: queries read
// the segments from disk, holding at most the Limit records asked for.
// QueryIn reads only the records of the projects it is given (others are
// decoded only as far as the hash chain needs) and at most a byte budget
// of the newest segments.
package audit
