package netplane

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The nftables rule sets are data: each table is built whole from the
// desired state (nfthost.go, nftrouter.go), then reconciled against what
// the kernel has, in one transaction that adds and removes only what
// differs: set elements one by one, chains whose rules changed rewritten,
// and nothing else touched. Each rule carries, as its comment, a hash of
// what it does, so rules are compared without decoding them.
//
// What the last Apply made is kept in memory, so a change of one rule
// costs a diff in memory and one small transaction; the kernel is read
// again after an agent start or a failed transaction.

// nftLayout names the current shape of Polyvisor's tables. A table made by
// an agent of another layout is replaced whole.
const nftLayout = "pv-layout-1"

// nftTable is one table as it should be.
type nftTable struct {
	family nftables.TableFamily
	name   string
	sets   []*nftSet
	chains []*nftChain
}

// nftSet is a set or map with its elements, by element id.
type nftSet struct {
	name     string
	keyType  nftables.SetDatatype
	dataType nftables.SetDatatype // maps only
	isMap    bool
	interval bool
	concat   bool
	elems    map[string]nftables.SetElement
}

func (s *nftSet) add(e nftables.SetElement) {
	if s.elems == nil {
		s.elems = map[string]nftables.SetElement{}
	}
	s.elems[elemID(e)] = e
}

// def is what must match for an existing set to be kept. The key type of
// a verdict map is not compared: the nftables library reads it back as
// the data type. Set names say their types, and a table of another layout
// is replaced whole.
func (s *nftSet) def() string {
	if s.isMap && (s.dataType.Name == nftables.TypeVerdict.Name || s.keyType.Name == nftables.TypeVerdict.Name) {
		return fmt.Sprintf("vmap/%v/%v", s.interval, s.concat)
	}
	return fmt.Sprintf("%s/%s/%v/%v/%v", s.keyType.Name, s.dataType.Name, s.isMap, s.interval, s.concat)
}

// nftChain is a chain with its rules; base is set for a base chain.
type nftChain struct {
	name  string
	base  *nftables.Chain
	rules []nftRule
}

func (c *nftChain) ids() []string {
	out := make([]string, len(c.rules))
	for i, r := range c.rules {
		out[i] = r.id
	}
	return out
}

// baseDef is what must match for an existing base chain to be kept.
func baseDef(c *nftables.Chain) string {
	if c == nil || c.Hooknum == nil {
		return ""
	}
	prio, pol := int32(0), -1
	if c.Priority != nil {
		prio = int32(*c.Priority)
	}
	if c.Policy != nil {
		pol = int(*c.Policy)
	}
	return fmt.Sprintf("%d/%d/%s/%d", *c.Hooknum, prio, c.Type, pol)
}

// nftRule is a rule and the id of what it does.
type nftRule struct {
	id    string
	exprs []expr.Any
}

// rule makes a rule; desc says what it does, in nft's words, and is what
// its id is made from: two rules with one desc must do the same.
func rule(desc string, exprs ...expr.Any) nftRule {
	sum := sha256.Sum256([]byte(desc))
	return nftRule{id: "pv:" + hex.EncodeToString(sum[:8]), exprs: exprs}
}

func elemID(e nftables.SetElement) string {
	id := hex.EncodeToString(e.Key) + "|" + hex.EncodeToString(e.KeyEnd) + "|" + hex.EncodeToString(e.Val)
	if e.VerdictData != nil {
		id += fmt.Sprintf("|%d:%s", e.VerdictData.Kind, e.VerdictData.Chain)
	}
	return id
}

// nftCache is what the last successful Apply made, per namespace and
// table.
type nftCache struct {
	mu     sync.Mutex
	tables map[string]map[string]*nftTable // namespace path, then family/name
}

func newNFTCache() *nftCache { return &nftCache{tables: map[string]map[string]*nftTable{}} }

func tableKey(t *nftTable) string { return fmt.Sprintf("%d/%s", t.family, t.name) }

// applyNFTAt makes the tables of one namespace (ns, known to the cache as
// nsKey) match want.
func (p *Plane) applyNFTAt(nsKey string, ns netns.NsHandle, want []*nftTable, ch *changes) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.WithSockOptions(bigBuffers))
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	defer c.CloseLasting()
	p.nft.mu.Lock()
	cached := p.nft.tables[nsKey]
	p.nft.mu.Unlock()
	var errs []error
	for _, t := range want {
		have := cached[tableKey(t)]
		if have == nil {
			if have, err = readTable(c, t.family, t.name); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		notes, err := syncTable(c, have, t)
		if err == nil {
			err = c.Flush()
		}
		p.nft.mu.Lock()
		if p.nft.tables[nsKey] == nil {
			p.nft.tables[nsKey] = map[string]*nftTable{}
		}
		if err != nil {
			delete(p.nft.tables[nsKey], tableKey(t))
			errs = append(errs, fmt.Errorf("updating nftables table %s: %w", t.name, err))
		} else {
			p.nft.tables[nsKey][tableKey(t)] = t
			for _, note := range notes {
				ch.add("nftables %s %s: %s", familyName(t.family), t.name, note)
			}
		}
		p.nft.mu.Unlock()
	}
	return errors.Join(errs...)
}

// removeNFTAt removes the tables of one namespace, if they exist.
func (p *Plane) removeNFTAt(nsKey string, ns netns.NsHandle, tables []*nftTable, ch *changes) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	defer c.CloseLasting()
	for _, t := range tables {
		if _, err := c.ListTableOfFamily(t.name, t.family); err != nil {
			continue // none
		}
		c.DelTable(&nftables.Table{Family: t.family, Name: t.name})
		if err := c.Flush(); err != nil {
			return fmt.Errorf("removing nftables table %s: %w", t.name, err)
		}
		ch.add("nftables %s %s: removed", familyName(t.family), t.name)
	}
	p.forgetNFT(nsKey)
	return nil
}

// bigBuffers lets one transaction carry a host's whole rule set (its
// thousands of set elements), and one answer hold a big set.
func bigBuffers(c *mnl.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 64<<20); e != nil {
				serr = fmt.Errorf("sizing the nftables socket's buffers: %w", e)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// forgetNFT drops the cache of a namespace that is gone.
func (p *Plane) forgetNFT(nsKey string) {
	p.nft.mu.Lock()
	delete(p.nft.tables, nsKey)
	p.nft.mu.Unlock()
}

// readTable reads a table from the kernel; nil when it does not exist or
// is not of the current layout.
func readTable(c *nftables.Conn, family nftables.TableFamily, name string) (*nftTable, error) {
	tab, err := c.ListTableOfFamily(name, family)
	if err != nil {
		return nil, nil // no such table
	}
	t := &nftTable{family: family, name: name}
	sets, err := c.GetSets(tab)
	if err != nil {
		return nil, fmt.Errorf("reading sets of %s: %w", name, err)
	}
	for _, s := range sets {
		ns := &nftSet{name: s.Name, keyType: s.KeyType, dataType: s.DataType, isMap: s.IsMap, interval: s.Interval, concat: s.Concatenation}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("reading elements of %s: %w", s.Name, err)
		}
		verdicts := s.IsMap && (s.KeyType.Name == nftables.TypeVerdict.Name || s.DataType.Name == nftables.TypeVerdict.Name)
		for _, e := range elems {
			if e.IntervalEnd {
				continue
			}
			el := nftables.SetElement{Key: e.Key, KeyEnd: e.KeyEnd, Val: e.Val, VerdictData: e.VerdictData}
			if verdicts && el.VerdictData == nil {
				if v, ok := decodeVerdict(e.Val); ok {
					el.Val, el.VerdictData = nil, v
				}
			}
			ns.add(el)
		}
		t.sets = append(t.sets, ns)
	}
	chains, err := c.ListChainsOfTableFamily(family)
	if err != nil {
		return nil, fmt.Errorf("reading chains of %s: %w", name, err)
	}
	for _, ch := range chains {
		if ch.Table.Name != name {
			continue
		}
		nc := &nftChain{name: ch.Name}
		if ch.Hooknum != nil {
			nc.base = ch
		}
		rules, err := c.GetRules(tab, ch)
		if err != nil {
			return nil, fmt.Errorf("reading rules of %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			id, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			nc.rules = append(nc.rules, nftRule{id: id})
		}
		t.chains = append(t.chains, nc)
	}
	return t, nil
}

// elemBatchBytes bounds the elements sent in one message: their list is
// one netlink attribute, whose length is 16 bits.
const elemBatchBytes = 32 << 10

// batches splits elements into lists that fit one message.
func batches(elems []nftables.SetElement) [][]nftables.SetElement {
	var out [][]nftables.SetElement
	start, size := 0, 0
	for i, e := range elems {
		n := 48 + len(e.Key) + len(e.KeyEnd) + len(e.Val)
		if e.VerdictData != nil {
			n += 16 + len(e.VerdictData.Chain)
		}
		if size+n > elemBatchBytes && i > start {
			out = append(out, elems[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(elems) {
		out = append(out, elems[start:])
	}
	return out
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyIPv4:
		return "ip"
	}
	return fmt.Sprint(f)
}

// syncTable queues in c what turns have (nil: nothing) into want, and
// says what it changes. The caller flushes c.
func syncTable(c *nftables.Conn, have, want *nftTable) ([]string, error) {
	tab := &nftables.Table{Family: want.family, Name: want.name}
	rebuild := have == nil || !slices.ContainsFunc(have.sets, func(s *nftSet) bool { return s.name == nftLayout })
	haveSets := map[string]*nftSet{}
	haveChains := map[string]*nftChain{}
	if !rebuild {
		for _, s := range have.sets {
			haveSets[s.name] = s
		}
		for _, ch := range have.chains {
			haveChains[ch.name] = ch
		}
		for _, s := range want.sets {
			if h := haveSets[s.name]; h != nil && h.def() != s.def() {
				rebuild = true
			}
		}
		for _, ch := range want.chains {
			if h := haveChains[ch.name]; h != nil && baseDef(h.base) != baseDef(ch.base) {
				rebuild = true
			}
		}
	}
	var notes []string
	if rebuild {
		if have != nil {
			c.DelTable(tab)
			notes = append(notes, "replaced: of another layout")
		} else {
			notes = append(notes, "made")
		}
		haveSets, haveChains = map[string]*nftSet{}, map[string]*nftChain{}
	}
	c.AddTable(tab)
	sets := map[string]*nftables.Set{}
	for _, s := range want.sets {
		ks := &nftables.Set{Table: tab, Name: s.name, KeyType: s.keyType, DataType: s.dataType, IsMap: s.isMap, Interval: s.interval, Concatenation: s.concat}
		if haveSets[s.name] == nil {
			if err := c.AddSet(ks, nil); err != nil {
				return notes, fmt.Errorf("adding set %s: %w", s.name, err)
			}
			if !rebuild {
				notes = append(notes, "added set "+s.name)
			}
		}
		sets[s.name] = ks
	}
	chains := map[string]*nftables.Chain{}
	for _, ch := range want.chains {
		kc := &nftables.Chain{Name: ch.name, Table: tab}
		if ch.base != nil {
			b := *ch.base
			b.Table, b.Name = tab, ch.name
			kc = &b
		}
		if haveChains[ch.name] == nil {
			c.AddChain(kc)
			if !rebuild {
				notes = append(notes, "added chain "+ch.name)
			}
		}
		chains[ch.name] = kc
	}
	// Elements: those gone first, so an element that changes its value
	// is deleted before it is added again.
	for _, s := range want.sets {
		if haveSets[s.name] == s {
			continue // the very set the last transaction made: unchanged
		}
		var del, add []nftables.SetElement
		if h := haveSets[s.name]; h != nil {
			for id, e := range h.elems {
				if _, ok := s.elems[id]; !ok {
					del = append(del, e)
				}
			}
		}
		for id, e := range s.elems {
			if h := haveSets[s.name]; h == nil || !hasElem(h, id) {
				add = append(add, e)
			}
		}
		for _, b := range batches(del) {
			if err := c.SetDeleteElements(sets[s.name], b); err != nil {
				return notes, fmt.Errorf("removing elements of %s: %w", s.name, err)
			}
		}
		slices.SortFunc(add, func(a, b nftables.SetElement) int { return cmpStr(elemID(a), elemID(b)) })
		for _, b := range batches(add) {
			if err := c.SetAddElements(sets[s.name], b); err != nil {
				return notes, fmt.Errorf("adding elements of %s: %w", s.name, err)
			}
		}
		if !rebuild && len(del)+len(add) > 0 {
			notes = append(notes, fmt.Sprintf("set %s: %d elements added, %d removed", s.name, len(add), len(del)))
		}
	}
	// Rules: a chain whose rules differ is rewritten in place.
	for _, ch := range want.chains {
		kc := chains[ch.name]
		if h := haveChains[ch.name]; h != nil {
			if slices.Equal(h.ids(), ch.ids()) {
				continue
			}
			c.FlushChain(kc)
		}
		for _, r := range ch.rules {
			exprs := make([]expr.Any, len(r.exprs))
			for i, e := range r.exprs {
				exprs[i] = bindSet(e, sets)
			}
			c.AddRule(&nftables.Rule{Table: tab, Chain: kc, Exprs: exprs, UserData: userdata.AppendString(nil, userdata.TypeComment, r.id)})
		}
		if haveChains[ch.name] != nil {
			notes = append(notes, "rewrote chain "+ch.name)
		}
	}
	// What is no longer wanted: chains (emptied first), then sets.
	wantChains := map[string]bool{}
	for _, ch := range want.chains {
		wantChains[ch.name] = true
	}
	for name, h := range haveChains {
		if wantChains[name] {
			continue
		}
		kc := &nftables.Chain{Name: name, Table: tab}
		if h.base != nil {
			b := *h.base
			b.Table = tab
			kc = &b
		}
		c.FlushChain(kc)
		notes = append(notes, "removed chain "+name)
	}
	for name := range haveChains {
		if !wantChains[name] {
			c.DelChain(&nftables.Chain{Name: name, Table: tab})
		}
	}
	for name := range haveSets {
		if sets[name] == nil {
			c.DelSet(&nftables.Set{Table: tab, Name: name})
			notes = append(notes, "removed set "+name)
		}
	}
	return notes, nil
}

func hasElem(s *nftSet, id string) bool {
	_, ok := s.elems[id]
	return ok
}

// bindSet points a lookup or dynset expression at the set object of this
// transaction, so a set made in it can be used by its rules.
func bindSet(e expr.Any, sets map[string]*nftables.Set) expr.Any {
	switch l := e.(type) {
	case *expr.Lookup:
		if s := sets[l.SetName]; s != nil {
			cp := *l
			cp.SetID = s.ID
			return &cp
		}
	}
	return e
}

// decodeVerdict reads a verdict map element's value as the nftables
// library hands it back: the netlink attributes of a verdict (code, then
// chain).
func decodeVerdict(b []byte) (*expr.Verdict, bool) {
	v := &expr.Verdict{}
	found := false
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ (1 << 15)
		if l < 4 || l > len(b) {
			return nil, false
		}
		val := b[4:l]
		switch typ {
		case 1: // NFTA_VERDICT_CODE
			if len(val) != 4 {
				return nil, false
			}
			v.Kind = expr.VerdictKind(int32(binary.BigEndian.Uint32(val)))
			found = true
		case 2: // NFTA_VERDICT_CHAIN
			v.Chain = strings.TrimRight(string(val), "\x00")
		}
		b = b[(l+3)&^3:]
	}
	return v, found
}
