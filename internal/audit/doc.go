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
// at most 1 MiB. Records are appended to the newest segment only; when it
// has reached Options.SegmentBytes the next record starts a new one.
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
// Queries skip a malformed line anywhere else, and log that they did.
//
// # Retention
//
// The oldest whole segments are deleted while the segments together take
// more than Options.MaxBytes, and while the newest record of the oldest
// segment is older than Options.MaxAge; the segment being written to is
// never deleted, so the log can exceed MaxBytes by up to one segment and
// keep records older than MaxAge while it is the newest. Retention runs when
// the log is opened, whenever a new segment is started, and on each call to
// Log.Prune, which the server calls periodically. A segment's newest record
// is taken as its last one when the log is opened.
//
// Nothing is kept in memory beyond a few numbers per segment: queries read
// the segments from disk, holding at most the Limit records asked for.
package audit
