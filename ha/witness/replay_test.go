package witness

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The attacks of the HA-hardening issue: an attacker on the management
// network records the heads' authentic requests and plays them to the
// witness later, after a head or the witness restarted. These tests use
// only real clients and Server.Handle, not the wire format.

// tapeWitness is a witness on one UDP socket that records every request
// datagram, so that a test can replay them (Handle, as if from the
// network). restart replaces the Server (a new witness boot).
type tapeWitness struct {
	t    *testing.T
	addr string
	cur  atomic.Pointer[Server]
	mu   sync.Mutex
	tape [][]byte
}

func newTapeWitness(t *testing.T, cfg Config) *tapeWitness {
	t.Helper()
	w := &tapeWitness{t: t}
	w.restart(cfg)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	w.addr = conn.LocalAddr().String()
	go func() {
		buf := make([]byte, MaxMessage+1)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			w.mu.Lock()
			w.tape = append(w.tape, append([]byte(nil), buf[:n]...))
			w.mu.Unlock()
			if out := w.cur.Load().Handle(buf[:n], from.String()); out != nil {
				conn.WriteTo(out, from)
			}
		}
	}()
	return w
}

func (w *tapeWitness) restart(cfg Config) *Server {
	w.t.Helper()
	if cfg.Pair == "" {
		cfg.Pair, cfg.Key = "vdi-nas", testKey
	}
	cfg.Log = testLog(w.t).With("side", "witness")
	s, err := NewServer(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	w.cur.Store(s)
	return s
}

func (w *tapeWitness) server() *Server { return w.cur.Load() }

// record runs fn and returns the last request datagram it sent: the
// one the witness acted on.
func (w *tapeWitness) record(fn func()) []byte {
	w.t.Helper()
	w.mu.Lock()
	n := len(w.tape)
	w.mu.Unlock()
	fn()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.tape) == n {
		w.t.Fatal("nothing was sent")
	}
	return w.tape[len(w.tape)-1]
}

// replay plays recorded datagrams to the witness, as the attacker.
func (w *tapeWitness) replay(msgs ...[]byte) {
	for _, m := range msgs {
		w.server().Handle(m, "192.0.2.66:7791")
	}
}

func mustDo(t *testing.T, what string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fn(ctx); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// newHead is a head's client; a new one for the same node is a reboot
// of that head (a new client boot).
func newHead(t *testing.T, node string, w *tapeWitness, clock *fakeClock) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{Pair: "vdi-nas", Node: node, Key: testKey, Addr: w.addr, Retry: 50 * time.Millisecond,
		Now: clock.Now, Log: testLog(t).With("side", node)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tryAsk is ask with a short deadline, for a head whose requests an
// attack may have made the witness drop.
func tryAsk(c *Client) (answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	g, l, h, err := c.Request(ctx)
	return answer{g, l, h}, err
}

// Attack 1: a recorded release of the holder, replayed, must not free
// the vote while the holder counts on its lease.
func TestReplayedReleaseKeepsTheVote(t *testing.T) {
	const lease = 10 * time.Second
	for _, restart := range []bool{false, true} {
		t.Run(map[bool]string{false: "same witness", true: "witness restarted"}[restart], func(t *testing.T) {
			clock := newClock()
			cfg := Config{Lease: lease, Quiet: -1, Nodes: []string{nasA, nasB}, StateFile: newStateFile(t), Now: clock.Now}
			w := newTapeWitness(t, cfg)
			a1, b := newHead(t, nasA, w, clock), newHead(t, nasB, w, clock)
			ask(t, a1)
			release := w.record(func() { mustDo(t, "release", a1.Release) })
			a1.Close()
			// nas-a reboots (a new client boot) and holds the vote again.
			a2 := newHead(t, nasA, w, clock)
			if got := ask(t, a2); !got.granted {
				t.Fatalf("nas-a's new boot: %+v", got)
			}
			renewal := w.record(func() { ask(t, a2) })
			if restart {
				cfg.Quiet = 0
				w.restart(cfg)
				if got := ask(t, a2); !got.granted {
					t.Fatalf("nas-a not reinstated after the witness restart: %+v", got)
				}
			}
			clock.Advance(time.Second)
			w.replay(release, renewal, release)
			if h := w.server().Status().Holder; h != nasA {
				t.Errorf("after the replayed release the witness names holder %q; nas-a still counts on its lease: %v", h, a2.Held())
			}
			if got, err := tryAsk(b); got.granted {
				t.Errorf("nas-b granted while nas-a holds the vote: %+v, %v", got, err)
			}
			if got, err := tryAsk(a2); !got.granted || err != nil {
				t.Errorf("nas-a's renewal after the replay: %+v, %v", got, err)
			}
		})
	}
}

// Attack 2: a recorded clear-writer, replayed to a restarted witness,
// must not erase the record of which head alone has current data.
func TestReplayedClearWriterKeepsTheRecord(t *testing.T) {
	const lease = 10 * time.Second
	clock := newClock()
	path := newStateFile(t)
	cfg := Config{Lease: lease, Quiet: -1, Nodes: []string{nasA, nasB}, StateFile: path, Now: clock.Now}
	w := newTapeWitness(t, cfg)
	a, b := newHead(t, nasA, w, clock), newHead(t, nasB, w, clock)
	ask(t, a)
	// A first disconnect: recorded, then cleared after the resync...
	mustDo(t, "outdate peer", a.OutdatePeer)
	clearW := w.record(func() { mustDo(t, "clear writer", a.ClearWriter) })
	// ...a second one: nas-a writes alone again.
	mustDo(t, "outdate peer", a.OutdatePeer)
	for _, restartFirst := range []bool{false, true} {
		if restartFirst {
			w.restart(Config{Lease: lease, Quiet: -1, Nodes: []string{nasA, nasB}, StateFile: path, Now: clock.Now})
		}
		w.replay(clearW)
		if got := fileWriter(t, path); got != nasA || w.server().Status().Writer != nasA {
			t.Fatalf("restarted %v: after the replayed clear the writer is %q (file %q), want nas-a", restartFirst, w.server().Status().Writer, got)
		}
	}
	// nas-a dies: nas-b, with stale data, must not get the vote.
	a.Close()
	clock.Advance(2 * lease)
	if got, err := tryAsk(b); got.granted {
		t.Errorf("nas-b (outdated) granted the vote: %+v, %v", got, err)
	}
}

// Attack 3: recorded acquires of a head that died, replayed, must not
// pin the vote to it: the other head gets it once the dead head's lease
// and the quiet period are over.
func TestReplayedAcquireOfDeadHead(t *testing.T) {
	const lease = 10 * time.Second
	clock := newClock()
	cfg := Config{Lease: lease, Quiet: -1, Nodes: []string{nasA, nasB}, Now: clock.Now}
	w := newTapeWitness(t, cfg)
	a, b := newHead(t, nasA, w, clock), newHead(t, nasB, w, clock)
	var tape [][]byte
	for range 5 {
		tape = append(tape, w.record(func() { ask(t, a) })) // renewals: they claim a held lease
		clock.Advance(time.Second)
	}
	a.Close() // nas-a dies
	cfg.Quiet = 0
	w.restart(cfg) // the witness restarts too, keeping a quiet period
	for i, m := range tape {
		if i > 0 {
			clock.Advance(lease)
		}
		w.replay(m) // one per lease: enough to renew forever
		if h := w.server().Status().Holder; h == nasA {
			t.Fatalf("replay %d: the vote went to nas-a, which is dead", i)
		}
	}
	if got, err := tryAsk(b); !got.granted || err != nil {
		t.Errorf("nas-b after the quiet period: %+v, %v", got, err)
	}
	// Same witness, once nas-b's lease has run out unrenewed too.
	clock.Advance(2 * lease)
	w.replay(tape...)
	if h := w.server().Status().Holder; h != "" {
		t.Errorf("after replays on the same witness the holder is %q, want nobody", h)
	}
	if got, err := tryAsk(b); !got.granted || err != nil {
		t.Errorf("nas-b after the replays: %+v, %v", got, err)
	}
}

// Attack 4: requests of a head's earlier boot, replayed, must not retire
// its current boot: the real head's renewals go on.
func TestReplayedOldBootDoesNotRetireTheCurrent(t *testing.T) {
	const lease = 10 * time.Second
	clock := newClock()
	cfg := Config{Lease: lease, Quiet: -1, Nodes: []string{nasA, nasB}, Now: clock.Now}
	w := newTapeWitness(t, cfg)
	a1 := newHead(t, nasA, w, clock)
	old := w.record(func() { ask(t, a1) })
	a1.Close()
	clock.Advance(2 * lease)
	a2 := newHead(t, nasA, w, clock)
	for _, restart := range []bool{false, true} {
		if restart {
			cfg.Quiet = 0
			w.restart(cfg)
		}
		if got := ask(t, a2); !got.granted {
			t.Fatalf("restarted %v: nas-a's current boot: %+v", restart, got)
		}
		w.replay(old)
		for i := range 3 {
			clock.Advance(time.Second)
			if got, err := tryAsk(a2); !got.granted || err != nil {
				t.Fatalf("restarted %v: renewal %d after the old boot's replay: %+v, %v", restart, i, got, err)
			}
		}
	}
}

// Attack 5: a flood of replayed requests for a head, of its earlier and
// its current boot, must not keep it from renewing.
func TestReplayFloodDoesNotStopRenewals(t *testing.T) {
	const lease = 10 * time.Second
	clock := newClock()
	cfg := Config{Lease: lease, Quiet: -1, Nodes: []string{nasA, nasB}, Now: clock.Now}
	w := newTapeWitness(t, cfg)
	a1 := newHead(t, nasA, w, clock)
	var old, cur [][]byte
	for range 3 {
		old = append(old, w.record(func() { ask(t, a1) }))
	}
	a1.Close()
	clock.Advance(2 * lease)
	a2 := newHead(t, nasA, w, clock)
	for range 3 {
		cur = append(cur, w.record(func() { ask(t, a2) }))
	}
	tape := append(cur, old...)
	cfg.Quiet = 0
	w.restart(cfg)
	for i := range 20 {
		for range 50 {
			w.replay(tape...)
			clock.Advance(10 * time.Millisecond)
		}
		if got, err := tryAsk(a2); !got.granted || err != nil {
			t.Fatalf("renewal %d during the flood: %+v, %v", i, got, err)
		}
	}
	if h := w.server().Status().Holder; h != nasA {
		t.Errorf("holder %q", h)
	}
}
