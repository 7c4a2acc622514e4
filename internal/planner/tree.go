package planner

// tree answers "the leftmost host with at least this much CPU and memory
// free" in about O(log n): a segment tree over the hosts in packing order
// keeping the largest free CPU and the largest free memory under each node.
// A host that must not be chosen has -1 in both.
type tree struct {
	size     int
	cpu, mem []float64
}

func newTree(n int) *tree {
	size := 1
	for size < n {
		size *= 2
	}
	t := &tree{size: size, cpu: make([]float64, 2*size), mem: make([]float64, 2*size)}
	for i := range t.cpu {
		t.cpu[i], t.mem[i] = -1, -1
	}
	return t
}

// set records the free CPU and memory of the host at pos.
func (t *tree) set(pos int, cpu, mem float64) {
	i := pos + t.size
	t.cpu[i], t.mem[i] = cpu, mem
	for i /= 2; i >= 1; i /= 2 {
		t.cpu[i] = max(t.cpu[2*i], t.cpu[2*i+1])
		t.mem[i] = max(t.mem[2*i], t.mem[2*i+1])
	}
}

// find returns the leftmost position whose free CPU and memory are at
// least cpu and mem (less slack) and for which ok holds, or -1. The two
// maxima under a node may come from different hosts, so find descends
// into every subtree that could hold one and backtracks.
func (t *tree) find(cpu, mem float64, ok func(pos int) bool) int {
	return t.findAt(1, cpu-slack, mem-slack, ok)
}

func (t *tree) findAt(node int, cpu, mem float64, ok func(int) bool) int {
	if t.cpu[node] < cpu || t.mem[node] < mem {
		return -1
	}
	if node >= t.size {
		if ok(node - t.size) {
			return node - t.size
		}
		return -1
	}
	if p := t.findAt(2*node, cpu, mem, ok); p >= 0 {
		return p
	}
	return t.findAt(2*node+1, cpu, mem, ok)
}

// slack absorbs floating-point error in sums of sizes.
const slack = 1e-6
