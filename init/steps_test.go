package pid1

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func testBoot() *Boot {
	return &Boot{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), out: &outputs{}}
}

func TestCheckOrder(t *testing.T) {
	run := func(*Boot) error { return nil }
	tests := []struct {
		name    string
		done    []string
		steps   []Step
		wantErr string
	}{
		{name: "empty"},
		{name: "in order", steps: []Step{{Name: "a", Run: run}, {Name: "b", After: []string{"a"}, Run: run}}},
		{name: "reversed", steps: []Step{{Name: "b", After: []string{"a"}, Run: run}, {Name: "a", Run: run}}, wantErr: `"b" must come after "a"`},
		{name: "unknown", steps: []Step{{Name: "b", After: []string{"x"}, Run: run}}, wantErr: `after "x"`},
		{name: "from earlier sequence", done: []string{"a"}, steps: []Step{{Name: "b", After: []string{"a"}, Run: run}}},
		{name: "duplicate", steps: []Step{{Name: "a", Run: run}, {Name: "a", Run: run}}, wantErr: "twice"},
		{name: "no func", steps: []Step{{Name: "a"}}, wantErr: "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := map[string]bool{}
			for _, d := range tt.done {
				done[d] = true
			}
			err := checkOrder(done, tt.steps)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// The real boot sequence must satisfy its own ordering constraints.
func TestBootStepsOrdered(t *testing.T) {
	if err := checkOrder(nil, append(earlySteps(), rootSteps()...)); err != nil {
		t.Fatal(err)
	}
}

func TestRunSteps(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		steps   []struct{ fail, optional, panics bool }
		wantRan int
		wantErr bool
	}{
		{name: "all ok", steps: []struct{ fail, optional, panics bool }{{}, {}, {}}, wantRan: 3},
		{name: "stop at required failure", steps: []struct{ fail, optional, panics bool }{{}, {fail: true}, {}}, wantRan: 2, wantErr: true},
		{name: "optional failure continues", steps: []struct{ fail, optional, panics bool }{{fail: true, optional: true}, {}}, wantRan: 2},
		{name: "panic is a failure", steps: []struct{ fail, optional, panics bool }{{panics: true}, {}}, wantRan: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran []int
			var steps []Step
			for i, s := range tt.steps {
				steps = append(steps, Step{Name: string(rune('a' + i)), Optional: s.optional, Run: func(*Boot) error {
					ran = append(ran, i)
					if s.panics {
						panic("oops")
					}
					if s.fail {
						return boom
					}
					return nil
				}})
			}
			err := runSteps(testBoot(), steps)
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v", err)
			}
			want := make([]int, tt.wantRan)
			for i := range want {
				want[i] = i
			}
			if !slices.Equal(ran, want) {
				t.Errorf("ran %v, want %v", ran, want)
			}
		})
	}
}

// The steps after the root and the shutdown steps satisfy their own
// ordering constraints, with the early and root steps done before.
func TestAfterRootAndShutdownStepsOrdered(t *testing.T) {
	done := map[string]bool{}
	for _, s := range append(earlySteps(), rootSteps()...) {
		done[s.Name] = true
	}
	if err := checkOrder(done, afterRootSteps()); err != nil {
		t.Fatal(err)
	}
	if err := checkOrder(nil, shutdownSteps()); err != nil {
		t.Fatal(err)
	}
	for _, s := range shutdownSteps() {
		if !s.Optional {
			t.Errorf("shutdown step %q is required: a failing step must not keep the node from powering off", s.Name)
		}
	}
}

// What an operator needs to reach a broken node comes before anything
// that reads the site's data, and the state comes before the config.
func TestAfterRootStepPolicy(t *testing.T) {
	idx := map[string]int{}
	for i, s := range afterRootSteps() {
		idx[s.Name] = i
	}
	for _, pair := range [][2]string{
		{"events", "state"}, {"status socket", "state"}, {"watchdog", "state"}, {"power button", "state"},
		{"state", "site config"}, {"persistent log", "site config"}, {"site config", "node"},
		{"node", "services"}, {"services", "ready"},
	} {
		a, aok := idx[pair[0]]
		b, bok := idx[pair[1]]
		if !aok || !bok || a >= b {
			t.Errorf("step %q must come before %q", pair[0], pair[1])
		}
	}
}
