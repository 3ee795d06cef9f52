package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Pinger is the tiebreaker with witness.ping_target: the head counts the
// vote as held while the target answers ICMP echo. It gives no
// exclusivity (docs/ha.md says what that costs). PID 1 runs as root, so
// it uses a raw socket rather than exec'ing ping every interval.
type Pinger struct {
	target netip.Addr
	every  time.Duration
	valid  time.Duration // a reply counts for this long
	log    *slog.Logger
	id     uint16

	mu      sync.Mutex
	seq     uint16
	lastOK  time.Time
	lastErr string
}

func NewPinger(target string, every, valid time.Duration, log *slog.Logger) (*Pinger, error) {
	a, err := netip.ParseAddr(target)
	if err != nil || !a.Is4() {
		return nil, fmt.Errorf("ping target %q: an IPv4 address is needed", target)
	}
	var id [2]byte
	rand.Read(id[:])
	return &Pinger{target: a, every: every, valid: valid, log: log, id: binary.BigEndian.Uint16(id[:])}, nil
}

// echoRequest is an ICMP echo request with its checksum.
func echoRequest(id, seq uint16) []byte {
	b := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 't', 'n', 'd', 'm'}
	binary.BigEndian.PutUint16(b[2:], inetChecksum(b))
	return b
}

// isEchoReply reports whether b (an ICMP message, no IP header) answers
// one of our requests.
func isEchoReply(b []byte, id uint16) bool {
	return len(b) >= 8 && b[0] == 0 && b[1] == 0 && binary.BigEndian.Uint16(b[4:]) == id && inetChecksum(b) == 0
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// run pings until ctx ends. A socket that cannot be opened is retried:
// the vote is simply not held meanwhile.
func (p *Pinger) run(ctx context.Context) {
	for ctx.Err() == nil {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			p.note(fmt.Errorf("icmp socket: %w", err))
			sleepCtx(ctx, 5*time.Second)
			continue
		}
		go func() {
			<-ctx.Done()
			c.Close()
		}()
		go p.receive(c)
		t := time.NewTicker(p.every)
		for ctx.Err() == nil {
			p.mu.Lock()
			p.seq++
			req := echoRequest(p.id, p.seq)
			p.mu.Unlock()
			if _, err := c.WriteTo(req, &net.IPAddr{IP: p.target.AsSlice()}); err != nil {
				p.note(err)
			}
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
		t.Stop()
	}
}

func (p *Pinger) receive(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ip, ok := from.(*net.IPAddr)
		if !ok || !ip.IP.Equal(p.target.AsSlice()) || !isEchoReply(buf[:n], p.id) {
			continue
		}
		p.mu.Lock()
		was := !p.lastOK.IsZero() && time.Since(p.lastOK) <= p.valid
		p.lastOK, p.lastErr = time.Now(), ""
		p.mu.Unlock()
		if !was {
			p.log.Info("ping target answers", "target", p.target.String())
		}
	}
}

func (p *Pinger) note(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastErr != err.Error() {
		p.log.Warn("ping target", "target", p.target.String(), "err", err)
	}
	p.lastErr = err.Error()
}

// held reports whether the target answered within the validity window.
func (p *Pinger) held() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.lastOK.IsZero() && time.Since(p.lastOK) <= p.valid
}

func (p *Pinger) state() (lastOK time.Time, lastErr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastOK, p.lastErr
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
