package network

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// InternetSet is the name of the nftables set holding the addresses of the
// sandboxes allowed to reach the outside.
const InternetSet = "internet_addrs"

// installRules replaces the Manager's table in one atomic batch. In nft
// syntax (br = bridge, sn = subnet):
//
//	table inet T {
//	  set internet_addrs { type ipv4_addr; elements = { ... } }
//	  chain input { type filter hook input priority filter; policy accept;
//	    iifname br ct state established,related accept
//	    iifname br drop }                      # no host service for sandboxes
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    ct state established,related accept
//	    oifname br drop                        # nothing routed into sandboxes
//	    iifname br ip daddr { deny egress } drop
//	    iifname br ip daddr sn drop
//	    iifname br ip saddr != sn drop
//	    iifname br ip saddr @internet_addrs accept
//	    iifname br drop }
//	  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//	    ip saddr sn oifname != br masquerade }
//	}
//
// The input port (the host veth) is not visible in the inet forward hook,
// whose iifname is the bridge, so egress is keyed by source address. A
// sandbox cannot send from another address: it has no CAP_NET_ADMIN or
// CAP_NET_RAW in a namespace owned by the host's user namespace.
func (m *Manager) installRules(internet []netip.Addr) error {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	c := m.nft
	t := &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyINet}
	// add (no-op if present) + delete + add: replaces the table atomically
	// whether or not it existed.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	set := &nftables.Set{Table: t, ID: 1, Name: InternetSet, KeyType: nftables.TypeIPAddr}
	elems := make([]nftables.SetElement, 0, len(internet))
	for _, a := range internet {
		elems = append(elems, nftables.SetElement{Key: a.AsSlice()})
	}
	if err := c.AddSet(set, elems); err != nil {
		return fmt.Errorf("nftables set: %w", err)
	}

	policy := nftables.ChainPolicyAccept
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	forward := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &policy})

	br := m.cfg.Bridge
	sn := m.cfg.Subnet
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}

	rule(input, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), ctEstablished(), verdict(expr.VerdictAccept))
	rule(input, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), verdict(expr.VerdictDrop))

	rule(forward, ctEstablished(), verdict(expr.VerdictAccept))
	rule(forward, ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br), verdict(expr.VerdictDrop))
	for _, p := range m.cfg.DenyEgress {
		rule(forward, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), ipv4(), prefix(16, p, expr.CmpOpEq), verdict(expr.VerdictDrop))
	}
	rule(forward, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), ipv4(), prefix(16, sn, expr.CmpOpEq), verdict(expr.VerdictDrop))
	rule(forward, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), ipv4(), prefix(12, sn, expr.CmpOpNeq), verdict(expr.VerdictDrop))
	rule(forward, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), ipv4(), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}, verdict(expr.VerdictAccept))
	rule(forward, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), verdict(expr.VerdictDrop))

	rule(post, ipv4(), prefix(12, sn, expr.CmpOpEq), ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, br), []expr.Any{&expr.Masq{}})

	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", t.Name, err)
	}
	m.table, m.set = t, set
	return nil
}

// deleteRules removes the Manager's table; a missing table is fine.
func (m *Manager) deleteRules() error {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	t := &nftables.Table{Name: m.cfg.Table, Family: nftables.TableFamilyINet}
	m.nft.AddTable(t)
	m.nft.DelTable(t)
	if err := m.nft.Flush(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", t.Name, err)
	}
	return nil
}

// setInternet adds or removes addr in the internet set. Adding a present
// element or removing an absent one is not an error.
func (m *Manager) setInternet(addr netip.Addr, on bool) error {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	elems := []nftables.SetElement{{Key: addr.AsSlice()}}
	var err error
	if on {
		err = m.nft.SetAddElements(m.set, elems)
	} else {
		err = m.nft.SetDeleteElements(m.set, elems)
	}
	if err == nil {
		err = m.nft.Flush()
	}
	if err != nil && !on && errors.Is(err, unix.ENOENT) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("update nftables set %s (%s, allow=%v): %w", InternetSet, addr, on, err)
	}
	return nil
}

// internetAddrs lists the internet set's elements (for checks and tests).
func (m *Manager) internetAddrs() ([]netip.Addr, error) {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	elems, err := m.nft.GetSetElements(m.set)
	if err != nil {
		return nil, fmt.Errorf("list nftables set %s: %w", InternetSet, err)
	}
	out := make([]netip.Addr, 0, len(elems))
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			out = append(out, a)
		}
	}
	return out, nil
}

func ifname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

func ipv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// prefix matches the IPv4 header address at offset (12 source, 16
// destination) against p.
func prefix(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	m := make([]byte, 4)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }
