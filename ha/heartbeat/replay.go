package heartbeat

// windowSize is how far back (in sequence numbers) a packet of the current
// boot may arrive and still be accepted. The peer spends one sequence
// number per packet per path, so 1024 covers minutes of reordering
// between paths at any sane interval; older packets are dropped as
// replays. The window only stops duplicates: it bounds no age, so a
// packet must also prove it is fresh (Endpoint.proofLocked).
const windowSize = 1024

// window is an anti-replay window over one boot's sequence numbers, in
// the manner of IPsec's: a packet is new if it is above every seen one,
// or within windowSize below the highest and not seen yet. Copies of one
// round arrive on different paths with different numbers, in any order,
// so a plain "greater than the last" rule would drop good packets.
type window struct {
	top  uint64
	seen [windowSize]uint64 // seen[s%windowSize] == s: s was accepted
}

// check reports whether seq would be new, marking nothing. Sequence
// numbers start at 1, so the zero value of seen means "nothing".
func (w *window) check(seq uint64) bool {
	return seq != 0 && seq+windowSize > w.top && w.seen[seq%windowSize] != seq
}

// accept marks seq seen and reports whether it was new.
func (w *window) accept(seq uint64) bool {
	if !w.check(seq) {
		return false
	}
	w.seen[seq%windowSize] = seq
	if seq > w.top {
		w.top = seq
	}
	return true
}

// maxRetired is how many of the peer's earlier boot IDs are remembered;
// their packets are replays.
const maxRetired = 16

// retire remembers id as an ended boot, dropping the oldest beyond
// maxRetired.
func retire(list []BootID, id BootID) []BootID {
	list = append(list, id)
	if len(list) > maxRetired {
		list = list[len(list)-maxRetired:]
	}
	return list
}
