package network

import (
	"encoding/binary"
	"net/netip"
)

// pool hands out sandbox addresses of a subnet: every host address except
// the first (the gateway) and the last (broadcast). It allocates next-fit, so
// a freed address is reused as late as possible (stale ARP entries and
// conntrack flows of a dead sandbox then age out first). Not safe for
// concurrent use; the Manager guards it.
type pool struct {
	first, last uint32 // allocatable range, inclusive
	next        uint32 // where the next search starts
	used        map[uint32]bool
}

func newPool(p netip.Prefix) *pool {
	base := u32(p.Masked().Addr())
	size := uint32(1) << (32 - p.Bits())
	// network, gateway ... broadcast
	return &pool{first: base + 2, last: base + size - 2, next: base + 2, used: map[uint32]bool{}}
}

// allocate reserves a free address.
func (p *pool) allocate() (netip.Addr, error) {
	n := p.last - p.first + 1
	a := p.next
	for range n {
		if a > p.last || a < p.first {
			a = p.first
		}
		if !p.used[a] {
			p.used[a] = true
			p.next = a + 1
			return addr(a), nil
		}
		a++
	}
	return netip.Addr{}, ErrExhausted
}

// reserve marks a as taken; it reports false when a is outside the pool or
// already taken.
func (p *pool) reserve(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	v := u32(a)
	if v < p.first || v > p.last || p.used[v] {
		return false
	}
	p.used[v] = true
	return true
}

// release frees a; freeing a free or foreign address does nothing.
func (p *pool) release(a netip.Addr) {
	if a.Is4() {
		delete(p.used, u32(a))
	}
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
