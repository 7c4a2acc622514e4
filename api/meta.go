package api

import (
	"crypto/rand"
	"fmt"
	"strings"
	"time"
)

// Meta is the identity and bookkeeping part shared by every stored object.
type Meta struct {
	// Name is the object's unique name within its kind and project (a DNS
	// label for VMs).
	Name string `json:"name"`
	// Project owns the object (VMs, images, providers); empty for objects
	// that belong to the whole installation (hosts, users, projects).
	Project string `json:"project,omitempty"`
	// UID never changes and is never reused, even when a name is.
	UID string `json:"uid"`
	// Labels are free-form key/value pairs used by label selectors.
	Labels map[string]string `json:"labels,omitempty"`
	// Version is the store revision of the last write (optimistic concurrency).
	Version int64 `json:"version"`
	// Generation increases with every change to the desired state (spec).
	Generation int64     `json:"generation"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Key is the object's store key: "<project>/<name>" for project objects,
// the name otherwise.
func (m *Meta) Key() string { return Key(m.Project, m.Name) }

// Key is the store key of the object called name in project.
func Key(project, name string) string {
	if project == "" {
		return name
	}
	return project + "/" + name
}

// SplitKey splits a key made by Key; project is empty for a bare name.
func SplitKey(key string) (project, name string) {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return "", key
}

// List is the envelope of every paginated list response.
type List[T any] struct {
	Items []T `json:"items"`
	// Continue, when not empty, is passed back as ?continue= to get the next page.
	Continue string `json:"continue,omitempty"`
}

// ListOptions are the query parameters every list route accepts.
type ListOptions struct {
	Limit    int    // ?limit= (default 100, max 1000)
	Continue string // ?continue=
	Selector string // ?selector=k=v,k!=v,k (label selector)
	Host     string // ?host= (VMs only)
	State    string // ?state= (VMs: power state; operations: status)
	// Provider filters VMs and hosts by provider name (?provider=);
	// "none" keeps those on Polyvisor's own hosts.
	Provider string
	// Project is the project listed (?project=; default "default").
	// AllProjects lists every project the caller may read
	// (?all-projects=true).
	Project     string
	AllProjects bool
}

// NewUID returns a new random UID: a version 4 UUID.
func NewUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
