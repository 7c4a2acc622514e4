package vsphere

import (
	"github.com/vmware/govmomi/vim25/types"
)

// node is an object's place in the inventory tree.
type node struct {
	kind   string
	name   string
	parent types.ManagedObjectReference // zero at the top of what was read
}

// index holds the inventory tree read in one retrieval (or kept up to date
// by a watch), so that paths and datacenter and cluster membership come
// from parents without a round trip per object. Answers are memoized; a
// change to the tree must call invalidate.
type index struct {
	nodes map[types.ManagedObjectReference]*node
	paths map[types.ManagedObjectReference]string
	dcs   map[types.ManagedObjectReference]string
}

func newIndex(n int) *index {
	return &index{
		nodes: make(map[types.ManagedObjectReference]*node, n),
		paths: make(map[types.ManagedObjectReference]string, n),
		dcs:   make(map[types.ManagedObjectReference]string, n),
	}
}

// nodeOf reads an object's name and parent from its properties. A VM in a
// vApp has no parent but a parentVApp; a vApp sits in the VM folder tree by
// parentFolder (or inside another vApp).
func nodeOf(oc *types.ObjectContent) *node {
	n := &node{kind: oc.Obj.Type}
	var folder, vapp types.ManagedObjectReference
	for i := range oc.PropSet {
		dp := &oc.PropSet[i]
		switch dp.Name {
		case "name":
			n.name = asString(dp.Val)
		case "parent":
			n.parent = asRef(dp.Val)
		case "parentFolder":
			folder = asRef(dp.Val)
		case "parentVApp":
			vapp = asRef(dp.Val)
		}
	}
	if n.parent.Value == "" {
		n.parent = folder
	}
	if n.parent.Value == "" {
		n.parent = vapp
	}
	return n
}

// put adds or replaces the object's node; it reports whether the object's
// place in the tree (name or parent) changed.
func (ix *index) put(oc *types.ObjectContent) bool {
	n := nodeOf(oc)
	old := ix.nodes[oc.Obj]
	ix.nodes[oc.Obj] = n
	return old == nil || old.name != n.name || old.parent != n.parent
}

func (ix *index) remove(ref types.ManagedObjectReference) {
	delete(ix.nodes, ref)
	ix.invalidate()
}

// invalidate forgets the memoized answers after a change to the tree.
func (ix *index) invalidate() {
	clear(ix.paths)
	clear(ix.dcs)
}

// maxDepth bounds walks up the tree, should it ever loop.
const maxDepth = 128

// path returns the inventory path of ref: "/DC0/vm/folder/name". The root
// folder is not in the container view, so a walk stops there.
func (ix *index) path(ref types.ManagedObjectReference) string {
	if p, ok := ix.paths[ref]; ok {
		return p
	}
	var chain []types.ManagedObjectReference
	base := ""
	for r := ref; len(chain) < maxDepth; {
		if p, ok := ix.paths[r]; ok {
			base = p
			break
		}
		n := ix.nodes[r]
		if n == nil {
			break
		}
		chain = append(chain, r)
		r = n.parent
	}
	for i := len(chain) - 1; i >= 0; i-- {
		base += "/" + ix.nodes[chain[i]].name
		ix.paths[chain[i]] = base
	}
	return ix.paths[ref]
}

// datacenter returns the id of the datacenter ref is in, or "".
func (ix *index) datacenter(ref types.ManagedObjectReference) string {
	if dc, ok := ix.dcs[ref]; ok {
		return dc
	}
	var chain []types.ManagedObjectReference
	dc := ""
	for r := ref; len(chain) < maxDepth; {
		if d, ok := ix.dcs[r]; ok {
			dc = d
			break
		}
		n := ix.nodes[r]
		if n == nil {
			break
		}
		if n.kind == "Datacenter" {
			dc = r.Value
			break
		}
		chain = append(chain, r)
		r = n.parent
	}
	for _, r := range chain {
		ix.dcs[r] = dc
	}
	if n := ix.nodes[ref]; n != nil && n.kind == "Datacenter" {
		ix.dcs[ref] = dc
	}
	return dc
}

// cluster returns the id of the cluster a host is in, or "".
func (ix *index) cluster(host types.ManagedObjectReference) string {
	n := ix.nodes[host]
	if n == nil || n.parent.Type != "ClusterComputeResource" {
		return ""
	}
	return n.parent.Value
}

// name returns an object's name, or "" when it is not in the index.
func (ix *index) name(ref types.ManagedObjectReference) string {
	if n := ix.nodes[ref]; n != nil {
		return n.name
	}
	return ""
}
