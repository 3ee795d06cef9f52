package witness

import (
	"bytes"
	"log/slog"
	"regexp"
	"testing"
	"time"
)

// A witness under a replay attack says so in its log: each refused
// request is logged at debug level only, so the totals are summarised,
// at most every refusedEvery and only when they changed. Step by step,
// with the summary lines each step must leave.
func TestRefusedRequestsSummarised(t *testing.T) {
	clock := newClock()
	var logBuf bytes.Buffer
	s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Nodes: []string{nasA, nasB}, Quiet: -1, Now: clock.Now,
		Log: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, s: s}
	var granting []byte
	// renewFor lets time pass as it does for a head: it renews every
	// second, so its challenge never expires.
	renewFor := func(dur time.Duration) {
		for range dur / time.Second {
			clock.Advance(time.Second)
			d.do(nasA, opAcquire, false)
		}
	}
	summary := regexp.MustCompile(`level=(\w+) msg="witness: requests refused so far".* replayed=(\d+) forged=(\d+) malformed=(\d+) wrong_pair=0 unknown_node=0 challenged=(\d+)`)
	steps := []struct {
		what string
		do   func()
		want []string // summaries logged by this step: level replayed forged malformed challenged
	}{
		{"first contact (challenged), then proven", func() {
			d.do(nasA, opAcquire, false)
			granting = d.req(nasA, opAcquire, false)
			d.send(granting)
		}, []string{"INFO 0 0 0 1"}},
		{"replays within the spacing", func() {
			renewFor(time.Second)
			for range 3 {
				d.send(granting)
			}
			s.Handle([]byte("garbage"), "test")
		}, nil},
		{"the spacing over: one summary of all", func() { renewFor(refusedEvery) }, []string{"WARN 3 0 1 1"}},
		{"nothing new: no summary", func() { renewFor(3 * refusedEvery) }, nil},
		{"a reply fed back long after the last summary: summarised at once", func() {
			other, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Quiet: -1, Now: clock.Now, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			s.Handle(other.Handle(d.req(nasA, opAcquire, false), "test"), "test")
			renewFor(refusedEvery)
		}, []string{"WARN 3 0 2 1"}},
	}
	for _, st := range steps {
		logBuf.Reset()
		st.do()
		var got []string
		for _, m := range summary.FindAllStringSubmatch(logBuf.String(), -1) {
			got = append(got, m[1]+" "+m[2]+" "+m[3]+" "+m[4]+" "+m[5])
		}
		if len(got) != len(st.want) || len(got) > 0 && got[0] != st.want[0] {
			t.Errorf("%s: summaries %q, want %q; log:\n%s", st.what, got, st.want, logBuf.String())
		}
	}
}
