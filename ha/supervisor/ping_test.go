package supervisor

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// reply turns an echo request into the target's echo reply.
func reply(req []byte) []byte {
	r := append([]byte(nil), req...)
	r[0], r[2], r[3] = 0, 0, 0
	sum := inetChecksum(r)
	r[2], r[3] = byte(sum>>8), byte(sum)
	return r
}

func TestEchoRequest(t *testing.T) {
	data := []byte("0123456789abcdef")
	req := echoRequest(0x1234, 7, data)
	if inetChecksum(req) != 0 {
		t.Fatalf("request checksum does not verify: % x", req)
	}
	id, seq, got, ok := parseEchoReply(reply(req))
	if !ok || id != 0x1234 || seq != 7 || string(got) != string(data) {
		t.Errorf("our reply reads as id %#x seq %d data %q ok %v", id, seq, got, ok)
	}
	bad := reply(req)
	bad[9]++
	for name, b := range map[string][]byte{"request": req, "short": reply(req)[:6], "bad checksum": bad} {
		if _, _, _, ok := parseEchoReply(b); ok {
			t.Errorf("%s taken for an echo reply", name)
		}
	}
}

// packetConn serves queued packets to Pinger.receive, then ends it.
type packetConn struct {
	net.PacketConn
	in []packet
}

type packet struct {
	b    []byte
	from net.Addr
}

func (c *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if len(c.in) == 0 {
		return 0, nil, net.ErrClosed
	}
	p := c.in[0]
	c.in = c.in[1:]
	return copy(b, p.b), p.from, nil
}

// Only the target's answer to the outstanding probe counts: a host on
// the management network that learnt the 16-bit ID (it is in every
// request) must not keep the vote "held" by forging replies, and a reply
// to an older probe, held back and released later, must not either.
func TestPingReplyMatching(t *testing.T) {
	target := &net.IPAddr{IP: net.IPv4(192, 0, 2, 1)}
	other := &net.IPAddr{IP: net.IPv4(192, 0, 2, 66)}
	tests := []struct {
		name string
		// replies builds what arrives; send makes the next probe.
		replies func(p *Pinger, send func() []byte) []packet
		held    bool
	}{
		{"answer to the outstanding probe", func(p *Pinger, send func() []byte) []packet {
			return []packet{{reply(send()), target}}
		}, true},
		{"answer from another host", func(p *Pinger, send func() []byte) []packet {
			return []packet{{reply(send()), other}}
		}, false},
		{"forged: right id, guessed sequence, no payload", func(p *Pinger, send func() []byte) []packet {
			send()
			return []packet{{reply(echoRequest(p.id, p.seq, nil)), target}}
		}, false},
		{"forged: right id and sequence, other payload", func(p *Pinger, send func() []byte) []packet {
			send()
			return []packet{{reply(echoRequest(p.id, p.seq, []byte("tndmtndmtndmtndm"))), target}}
		}, false},
		{"right id and payload, another sequence", func(p *Pinger, send func() []byte) []packet {
			send()
			return []packet{{reply(echoRequest(p.id, p.seq+1, p.out.data[:])), target}}
		}, false},
		{"answer to an older probe, released after a newer one left", func(p *Pinger, send func() []byte) []packet {
			old := reply(send())
			send()
			return []packet{{old, target}}
		}, false},
		{"no probe outstanding", func(p *Pinger, send func() []byte) []packet {
			r := reply(send())
			p.mu.Lock()
			p.out = probe{}
			p.mu.Unlock()
			return []packet{{r, target}}
		}, false},
		{"another pinger's reply (other id)", func(p *Pinger, send func() []byte) []packet {
			send()
			return []packet{{reply(echoRequest(p.id+1, p.seq, p.out.data[:])), target}}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPinger("192.0.2.1", time.Second, time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			p.receive(&packetConn{in: tt.replies(p, p.next)})
			if got := p.held(); got != tt.held {
				t.Errorf("held = %v, want %v", got, tt.held)
			}
		})
	}
}

// A probe is answered once, and the window counts from when the probe
// left, not from when a (late) answer arrived.
func TestPingWindowFromProbe(t *testing.T) {
	p, err := NewPinger("192.0.2.1", time.Second, 50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	target := &net.IPAddr{IP: net.IPv4(192, 0, 2, 1)}
	r := reply(p.next())
	time.Sleep(60 * time.Millisecond) // the answer comes after the window
	p.receive(&packetConn{in: []packet{{r, target}}})
	if p.held() {
		t.Error("a reply arriving after the window counts")
	}
	if _, ok := p.answer(r); ok {
		t.Error("a probe was answered twice")
	}
}
