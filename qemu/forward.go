package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"tandem.dev/tandem/site"
)

// defaultSegment is the management segment's subnet when neither the
// DHCP config nor the site config says otherwise: that of the lab's site
// config and of DHCPConfig's default.
var defaultSegment = netip.MustParsePrefix("10.0.0.0/24")

// hostNICAddr picks the host port's address: want, or the segment's
// second-to-last address. The segment is the DHCP server's subnet, else
// the site's management subnet, else defaultSegment. An address that the
// DHCP server or the site gives to someone else is refused.
func hostNICAddr(want netip.Prefix, dhcp *DHCPServer, siteTOML []byte) (netip.Prefix, error) {
	segment := defaultSegment
	type owner struct {
		addr netip.Addr
		who  string
	}
	var taken []owner
	var pool [2]netip.Addr
	if siteTOML != nil {
		// A site config a scenario made broken on purpose just says nothing here.
		if sc, err := site.Parse("site.toml", siteTOML); err == nil {
			for i, n := range sc.Nodes {
				if p := n.Management.Prefix(); p.IsValid() {
					if i == 0 {
						segment = p.Masked()
					}
					taken = append(taken, owner{p.Addr(), "node " + n.Name})
				}
			}
			if p := sc.VIP.Prefix(); p.IsValid() {
				taken = append(taken, owner{p.Addr(), "the VIP"})
			}
		}
	}
	if dhcp != nil {
		c := dhcp.Config()
		segment = c.Subnet
		taken = append(taken, owner{c.ServerID, "the DHCP server"}, owner{c.Router, "the DHCP router"})
		for _, d := range c.DNS {
			taken = append(taken, owner{d, "the DHCP DNS server"})
		}
		for m, a := range c.Static {
			taken = append(taken, owner{a, "DHCP static " + m})
		}
		pool = [2]netip.Addr{c.PoolFirst, c.PoolLast}
	}
	if !segment.Addr().Is4() || segment.Bits() > 29 {
		return netip.Prefix{}, fmt.Errorf("qemu: host port: segment %s is not an IPv4 subnet of 8 addresses or more", segment)
	}
	a := want
	if !a.IsValid() {
		s4 := segment.Addr().As4()
		last := binary.BigEndian.Uint32(s4[:]) | (1<<(32-segment.Bits()) - 1) // the broadcast address
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], last-2)
		a = netip.PrefixFrom(netip.AddrFrom4(b), segment.Bits())
	}
	switch {
	case !a.Addr().Is4():
		return netip.Prefix{}, fmt.Errorf("qemu: host port: %s is not IPv4", a)
	case !segment.Contains(a.Addr()) || a.Masked() != segment:
		return netip.Prefix{}, fmt.Errorf("qemu: host port: %s is not on the management segment %s", a, segment)
	case pool[0].IsValid() && !a.Addr().Less(pool[0]) && !pool[1].Less(a.Addr()):
		return netip.Prefix{}, fmt.Errorf("qemu: host port: %s is in the DHCP pool %s-%s; set LabConfig.HostAddr", a.Addr(), pool[0], pool[1])
	}
	for _, o := range taken {
		if o.addr == a.Addr() {
			return netip.Prefix{}, fmt.Errorf("qemu: host port: %s belongs to %s; set LabConfig.HostAddr", a.Addr(), o.who)
		}
	}
	return a, nil
}

// HostNIC is the host port's address on the management segment, invalid
// when the lab has none.
func (l *Lab) HostNIC() netip.Prefix {
	if l.host == nil {
		return netip.Prefix{}
	}
	return l.host.addr
}

var errNoHostNIC = errors.New("the lab has no host port (LabConfig.HostNIC, tandem lab --host-nic)")

// Forward listens on 127.0.0.1 in the host's namespace and connects each
// connection to to, a TCP address on the management segment, from inside
// the lab's namespace: the way a browser, curl or another process
// reaches a VM's web page. It returns the listening address; the forward
// ends with ctx or the lab.
func (l *Lab) Forward(ctx context.Context, to netip.AddrPort) (string, error) {
	if l.host == nil {
		return "", fmt.Errorf("qemu: lab forward: %w", errNoHostNIC)
	}
	if !l.host.addr.Masked().Contains(to.Addr()) {
		return "", fmt.Errorf("qemu: lab forward: %s is not on the management segment %s", to, l.host.addr.Masked())
	}
	ln, err := l.listenLoopback()
	if err != nil {
		return "", fmt.Errorf("qemu: lab forward: %w", err)
	}
	fs := ForwardState{Addr: ln.Addr().String(), To: to.String()}
	l.mu.Lock()
	l.state.Forwards = append(l.state.Forwards, fs)
	err = l.saveStateLocked()
	l.mu.Unlock()
	if err != nil {
		ln.Close()
		return "", err
	}
	go func() {
		l.host.forward(ctx, ln, to)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.state.Forwards = slices.DeleteFunc(l.state.Forwards, func(f ForwardState) bool { return f == fs })
		l.saveStateLocked()
	}()
	l.log.Info("lab forward", "addr", fs.Addr, "to", to)
	return fs.Addr, nil
}

// listenLoopback listens on a TCP port of the lab's block if one is left
// and free, else on any port.
func (l *Lab) listenLoopback() (net.Listener, error) {
	l.mu.Lock()
	port, err := 0, errors.New("no block")
	if l.ports != nil {
		port, err = l.ports.Next()
	}
	l.mu.Unlock()
	if err == nil {
		if ln, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			return ln, nil
		}
	}
	return net.Listen("tcp4", "127.0.0.1:0")
}

// DialContext dials addr, an IP address and port on the management
// segment (no host names: they would be resolved in the host's
// namespace), from inside the lab's namespace: for an http.Client's
// Transport in a test.
func (l *Lab) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if l.host == nil {
		return nil, fmt.Errorf("qemu: lab dial: %w", errNoHostNIC)
	}
	return l.host.DialContext(ctx, network, addr)
}

// ListenPacket listens on addr inside the lab's namespace, e.g. for the
// beacons unconfigured heads broadcast on the segment.
func (l *Lab) ListenPacket(network, addr string) (net.PacketConn, error) {
	if l.host == nil {
		return nil, fmt.Errorf("qemu: lab listen: %w", errNoHostNIC)
	}
	return l.host.ListenPacket(network, addr)
}

// MgmtAddr is a VM's address on the management segment as the lab knows
// it: the last address the hub's DHCP server acknowledged to its
// management MAC, else its static DHCP address, else its site config
// management address.
func (l *Lab) MgmtAddr(vm string) (netip.Addr, error) {
	st := l.State()
	mac := ""
	for _, v := range st.VMs {
		if v.Name != vm {
			continue
		}
		for _, n := range v.NICs {
			if n.ID == "mgmt" {
				mac = n.MAC
			}
		}
	}
	if mac == "" {
		return netip.Addr{}, fmt.Errorf("qemu: lab: no VM %q", vm)
	}
	if srv := l.Hub.DHCP(); srv != nil {
		ev := srv.Events()
		for i := len(ev) - 1; i >= 0; i-- {
			if ev[i].Kind == "ack" && strings.EqualFold(ev[i].MAC, mac) {
				return ev[i].Addr, nil
			}
		}
		for m, a := range srv.Config().Static {
			if strings.EqualFold(m, mac) {
				return a, nil
			}
		}
	}
	if l.siteTOML != nil {
		if sc, err := site.Parse("site.toml", l.siteTOML); err == nil {
			for _, n := range sc.Nodes {
				if p := n.Management.Prefix(); n.Name == vm && p.IsValid() {
					return p.Addr(), nil
				}
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("qemu: lab: %s has no known management address (no DHCP lease, no static one in the site config); give its address", vm)
}

// ResolveTarget turns VM[:PORT] or ADDR[:PORT] into an address on the
// segment; the port defaults to 443, where a head's wizard listens.
func (l *Lab) ResolveTarget(target string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(target); err == nil {
		return ap, nil
	}
	host, port := target, uint16(443)
	if h, p, err := net.SplitHostPort(target); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return netip.AddrPort{}, fmt.Errorf("qemu: lab: %q: bad port", target)
		}
		host, port = h, uint16(n)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a, port), nil
	}
	a, err := l.MgmtAddr(host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, port), nil
}

// Forward requests: another process (tandem lab forward) cannot reach
// the lab's namespace, so it asks the lab's process, which holds it, as
// RequestPowerOn does: forward-ID.req holds the target, the lab answers
// in forward-ID.out with "ADDR TO" or "error: ...".
const (
	forwardReqSuffix = ".req"
	forwardOutSuffix = ".out"
)

var forwardSeq atomic.Uint64

// RequestForward asks the process that runs the lab in dir for a
// loopback port to target (VM[:PORT] or ADDR[:PORT], see ResolveTarget)
// and waits for its answer: the listening address and the address on
// the segment it reaches.
func RequestForward(ctx context.Context, dir, target string) (addr, to string, err error) {
	id := fmt.Sprintf("forward-%d-%d", os.Getpid(), forwardSeq.Add(1))
	out := filepath.Join(dir, id+forwardOutSuffix)
	if err := writeAtomic(filepath.Join(dir, id+forwardReqSuffix), []byte(target+"\n")); err != nil {
		return "", "", fmt.Errorf("qemu: lab forward: %w", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(out); err == nil {
			os.Remove(out)
			line := strings.TrimSpace(string(b))
			if msg, ok := strings.CutPrefix(line, "error: "); ok {
				return "", "", fmt.Errorf("qemu: lab forward %s: %s", target, msg)
			}
			addr, to, _ = strings.Cut(line, " ")
			return addr, to, nil
		}
		select {
		case <-ctx.Done():
			os.Remove(filepath.Join(dir, id+forwardReqSuffix))
			return "", "", fmt.Errorf("qemu: lab forward %s: no answer from the lab's process: %w", target, ctx.Err())
		case <-tick.C:
		}
	}
}

// ServeForwards answers RequestForward's requests until ctx ends, with a
// forward that lives as long as the lab (one per target: a second
// request gets the same port), calling done with each.
func (l *Lab) ServeForwards(ctx context.Context, done func(target, addr string, err error)) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		reqs, _ := filepath.Glob(filepath.Join(l.Dir, "forward-*"+forwardReqSuffix))
		for _, req := range reqs {
			b, err := os.ReadFile(req)
			os.Remove(req)
			if err != nil {
				continue
			}
			target := strings.TrimSpace(string(b))
			addr, to, err := l.forwardOnce(target)
			answer := addr + " " + to
			if err != nil {
				answer = "error: " + err.Error()
			}
			if done != nil {
				done(target, addr, err)
			}
			writeAtomic(strings.TrimSuffix(req, forwardReqSuffix)+forwardOutSuffix, []byte(answer+"\n"))
		}
	}
}

// forwardOnce returns the lab's forward to target, made if need be.
func (l *Lab) forwardOnce(target string) (addr, to string, err error) {
	ap, err := l.ResolveTarget(target)
	if err != nil {
		return "", "", err
	}
	for _, f := range l.State().Forwards {
		if f.To == ap.String() {
			return f.Addr, f.To, nil
		}
	}
	addr, err = l.Forward(l.ctx, ap)
	return addr, ap.String(), err
}
