package witness

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A flood of unproven requests for a node mints few challenges, so the
// one the node's client holds is not evicted before it expires.
func TestChallengeFloodKeepsTheClientsChallenge(t *testing.T) {
	clock := newClock()
	const lease = 8 * time.Second // the challenges' TTL too
	s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Lease: lease, Quiet: -1, Now: clock.Now, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, s: s}
	d.do(nasA, opAcquire, false)
	// The attacker's replays, over almost a whole TTL: a recorded renewal
	// (its challenge spent) and a request to an earlier witness boot.
	spent := d.req(nasA, opAcquire, false)
	d.send(spent)
	held := d.chal[nasA] // what nas-a's client holds now
	d.wit, d.chal[nasA] = ID{3}, ID{4}
	stale := d.req(nasA, opRelease, false)
	before := s.Status().Counters
	for range 1000 {
		s.Handle(spent, "attacker")
		s.Handle(stale, "attacker")
		clock.Advance(lease / 1000)
	}
	clock.Advance(-lease / 1000) // just within the TTL
	if c := s.Status().Counters; c.Replayed-before.Replayed != 1000 || c.Challenged-before.Challenged != 1000 || c.Renewals != 1 {
		t.Errorf("counters %+v", c)
	}
	d.wit, d.chal[nasA] = s.boot, held
	rep, _ := d.send(d.req(nasA, opRelease, false))
	if rep.Status != Released || s.Status().Holder != "" {
		t.Errorf("nas-a's own request after the flood: %+v", rep)
	}
	if n := len(s.nodes[nasA].out); n > maxChallenges {
		t.Errorf("%d challenges outstanding", n)
	}
}

// A release acts only for the client boot that holds the vote.
func TestReleaseOnlyFromTheHoldersBoot(t *testing.T) {
	clock := newClock()
	s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Lease: 10 * time.Second, Quiet: -1, Now: clock.Now, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, s: s, boots: map[string]ID{nasA: {1}}}
	d.do(nasA, opAcquire, false)
	steps := []struct {
		boot   ID
		node   string
		op     uint8
		status Status
		holder string
	}{
		{ID{2}, nasA, opRelease, Denied, nasA}, // another start of nas-a
		{ID{1}, nasB, opRelease, Released, nasA},
		{ID{2}, nasA, opAcquire, Granted, nasA}, // the new start renews: the lease is its own now
		{ID{1}, nasA, opRelease, Denied, nasA},
		{ID{2}, nasA, opRelease, Released, ""},
	}
	for i, st := range steps {
		d.boots[st.node] = st.boot
		rep := d.do(st.node, st.op, false)
		if rep.Status != st.status || s.Status().Holder != st.holder {
			t.Errorf("step %d: %s, holder %q; want %s, %q", i, rep.Status, s.Status().Holder, st.status, st.holder)
		}
	}
	if c := s.Status().Counters; c.Releases != 1 {
		t.Errorf("releases %d", c.Releases)
	}
}

// stateBoot reads the boot bound to the writer record from the file.
func stateBoot(t *testing.T, path string) ID {
	t.Helper()
	st, err := loadState(path, "vdi-nas", false)
	if err != nil {
		t.Fatal(err)
	}
	return st.Boot
}

// The writer head restarts: the record passes to its new start when that
// start holds the vote, and only then may it be cleared; the earlier
// start's requests, even signed before the restart and delivered after,
// clear nothing.
func TestWriterHeadRestarts(t *testing.T) {
	const lease = 10 * time.Second
	path := filepath.Join(t.TempDir(), "vdi-nas.json")
	clock := newClock()
	s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Lease: lease, Quiet: -1, StateFile: path, InitState: true, Now: clock.Now, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	boot1, boot2 := ID{1}, ID{2}
	d := &driver{t: t, s: s, boots: map[string]ID{nasA: boot1}}
	d.do(nasA, opAcquire, false)
	if rep := d.do(nasA, opOutdatePeer, false); !rep.Writer || stateBoot(t, path) != boot1 {
		t.Fatalf("outdate peer: %+v, bound to %x", rep, stateBoot(t, path))
	}
	// nas-a's first start signs a clear (the attacker holds it back)
	// and dies; its lease runs out.
	delayed := d.req(nasA, opClearWriter, false)
	clock.Advance(lease + time.Second)

	// The new start asks to clear before it holds the vote: refused,
	// the record is its earlier start's.
	d.boots[nasA] = boot2
	if rep := d.do(nasA, opClearWriter, false); rep.Status != Denied || !rep.Writer || s.Status().Writer != nasA {
		t.Errorf("clear from the new start before it held the vote: %+v", rep)
	}
	// It asks for the vote: granted (it is the writer), and the record
	// is bound to it.
	if rep := d.do(nasA, opAcquire, false); rep.Status != Granted || stateBoot(t, path) != boot2 {
		t.Errorf("the new start's acquire: %+v, bound to %x", rep, stateBoot(t, path))
	}
	if rep, _ := d.send(delayed); rep.Status != Challenge || fileWriter(t, path) != nasA {
		t.Errorf("the earlier start's held-back clear: %+v, writer %q", rep, fileWriter(t, path))
	}
	// A proven request of the earlier start (it is not dead after all):
	// refused too.
	d.boots[nasA] = boot1
	if rep := d.do(nasA, opClearWriter, false); rep.Status != Denied || fileWriter(t, path) != nasA {
		t.Errorf("the earlier start's clear: %+v, writer %q", rep, fileWriter(t, path))
	}
	// The new start's word after the resync clears it, across a witness
	// restart too.
	d.boots[nasA] = boot2
	s, err = NewServer(Config{Pair: "vdi-nas", Key: testKey, Lease: lease, Quiet: -1, StateFile: path, Now: clock.Now, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	d.s = s
	if rep := d.do(nasA, opClearWriter, false); rep.Status != Released || fileWriter(t, path) != "" {
		t.Errorf("the new start's clear: %+v, writer %q", rep, fileWriter(t, path))
	}
}

// A state file from before boots were bound loads with none; the
// writer's next grant binds it. A bad boot is an error.
func TestStateFileBoot(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vdi-nas.json")
	writeState(t, path, `{"pair":"vdi-nas","writer":"nas-a","since":"2029-12-31T23:00:00Z"}`)
	clock := newClock()
	s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Quiet: -1, StateFile: path, Now: clock.Now, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	if s.writer.Boot != (ID{}) {
		t.Fatalf("boot %x", s.writer.Boot)
	}
	d := &driver{t: t, s: s, boots: map[string]ID{nasA: {0xab}}}
	d.do(nasA, opAcquire, false)
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), `"since":"2029-12-31T23:00:00Z","boot":"ab000000000000000000000000000000"`) {
		t.Errorf("state file %s, %v", b, err)
	}
	if rep := d.do(nasA, opClearWriter, false); rep.Status != Released {
		t.Errorf("clear: %+v", rep)
	}
	for _, bad := range []string{`"ab"`, `"zz000000000000000000000000000000"`, `7`} {
		writeState(t, path, `{"pair":"vdi-nas","writer":"nas-a","boot":`+bad+`}`)
		if _, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, StateFile: path}); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("boot %s: %v", bad, err)
		}
	}
}

// A witness that challenges every request gets an error after a few
// rounds, not an endless loop.
func TestClientBoundsChallenges(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n := 0
	go func() {
		buf := make([]byte, MaxMessage)
		for {
			k, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req, err := parseRequest(buf[:k], "vdi-nas", testKey)
			if err != nil {
				continue
			}
			n++
			rep := reply{Status: Challenge, Nonce: req.Nonce, Witness: ID{1}, Challenge: ID{byte(n)}, Pair: "vdi-nas"}
			conn.WriteTo(rep.marshal(testKey), from)
		}
	}()
	c, err := NewClient(ClientConfig{Pair: "vdi-nas", Node: nasA, Key: testKey, Addr: conn.LocalAddr().String(), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if g, _, _, err := c.Request(ctx); g || err == nil || !strings.Contains(err.Error(), "freshness") {
		t.Errorf("granted %v, err %v", g, err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
}
