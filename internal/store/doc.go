// Package store is Polyvisor's state store: typed collections of JSON
// objects in etcd, read from an in-memory index.
//
// # Where the state lives
//
// A single machine runs etcd embedded in the process (one member, data in
// <DataDir>/etcd, clients served on the unix socket <DataDir>/etcd.sock, or
// on a kernel-chosen 127.0.0.1 port when that path is too long, and no peer
// port; <DataDir>/etcd.lock keeps a second store off the same data dir). A
// fleet points Config.Endpoints at an external etcd cluster. Both go through
// the same etcd client and the same code.
//
// # Key layout
//
// Every key starts with the prefix, "/polyvisor/v1/" by default; the "v1"
// versions the layout itself, so that an incompatible layout can live beside
// the old one while data migrates.
//
//	<prefix><kind>/<name>   one object of a collection, as JSON
//	<prefix><key>           a raw key (PutKey, CreateKey), such as
//	                        "idempotency/<key>" or "join-tokens/<id>"
//
// kind is one path segment ("vms", "hosts"); name may contain "/". A raw
// key's first segment must not be a collection's kind. An object's desired
// state (spec) and observed state (status) are parts of the one value, so
// that a write of either is checked against the same version.
//
// # Versions
//
// An object's version is the etcd ModRevision of its key. The version stored
// in the JSON is ignored on read: the index stamps every object it decodes
// with its key's ModRevision (through the setVersion function given to
// NewCollection), and every write stamps the caller's object with the
// revision it created. Update and Delete take the version the caller read
// and fail with ErrConflict if the object changed since (optimistic
// concurrency); callers retry by reading again.
//
// # Consistency
//
// Writes go to etcd, in transactions whose preconditions are on CreateRevision
// (create) and ModRevision (update, delete), so they are linearizable and a
// failed precondition writes nothing; Txn writes several objects atomically.
//
// Reads (Get, List, Len) never go to etcd. Start reads the whole prefix at
// one revision R and then keeps one watch over the prefix from R+1, applying
// each batch of events to the index of every collection. Readers see
// immutable snapshots, so they never wait for the watch, and what they see
// only moves forward. The index can lag behind etcd by the watch's latency
// for writes made elsewhere (another server, another client), but not for
// this process's own writes: every write returns only after the index has
// applied its revision (WaitRev), so a Get after a Create sees the object.
//
// When the watch cannot continue (the revision it needs was compacted, the
// member lost its leader, etcd was unreachable) the store reads the prefix
// again and watches from there; the index is replaced without a moment where
// it is empty.
//
// Subscribe delivers each change after the call in revision order, through
// an unbounded per-subscriber queue, so a slow subscriber holds up neither
// the index nor other subscribers. After a reload, a subscriber gets the
// difference between the old and the new contents (a Put for each object
// that changed, a Delete for each that vanished) rather than every
// intermediate write.
//
// Objects handed out by Get, List and Subscribe are shared by every reader
// and must not be modified; Clone makes a private copy to change and write
// back.
package store
