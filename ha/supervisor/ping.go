package supervisor

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
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
	out     probe // the one probe a reply may answer
	lastOK  time.Time
	lastErr string
}

// probeLen is the random payload of a probe: with the sequence number it
// makes a reply that was not sent in answer to this very probe (an answer
// to an older one held back, or one forged by a host that guessed the
// 16-bit ID) fail to count.
const probeLen = 16

type probe struct {
	seq  uint16
	data [probeLen]byte
	sent time.Time // zero: no probe outstanding
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
func echoRequest(id, seq uint16, data []byte) []byte {
	b := append([]byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}, data...)
	binary.BigEndian.PutUint16(b[2:], inetChecksum(b))
	return b
}

// parseEchoReply reads an ICMP echo reply (no IP header) whose checksum
// verifies.
func parseEchoReply(b []byte) (id, seq uint16, data []byte, ok bool) {
	if len(b) < 8 || b[0] != 0 || b[1] != 0 || inetChecksum(b) != 0 {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), b[8:], true
}

// next makes a new probe, which replaces the outstanding one, and returns
// its echo request.
func (p *Pinger) next() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	p.out = probe{seq: p.seq, sent: time.Now()}
	rand.Read(p.out.data[:])
	return echoRequest(p.id, p.out.seq, p.out.data[:])
}

// answer reports whether b answers the outstanding probe, and when that
// probe was sent. A probe is answered once: a duplicate does not count.
func (p *Pinger) answer(b []byte) (time.Time, bool) {
	id, seq, data, ok := parseEchoReply(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ok || id != p.id || p.out.sent.IsZero() || seq != p.out.seq ||
		subtle.ConstantTimeCompare(data, p.out.data[:]) != 1 {
		return time.Time{}, false
	}
	sent := p.out.sent
	p.out = probe{}
	return sent, true
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
			req := p.next()
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
		if !ok || !ip.IP.Equal(p.target.AsSlice()) {
			continue
		}
		sent, ok := p.answer(buf[:n])
		if !ok {
			continue
		}
		p.mu.Lock()
		was := !p.lastOK.IsZero() && time.Since(p.lastOK) <= p.valid
		// The reply proves the target answered after the probe left;
		// a slow reply must not stretch the window past that.
		p.lastOK, p.lastErr = sent, ""
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
