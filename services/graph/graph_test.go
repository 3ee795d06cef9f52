package graph

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/services"
)

// res is a Resource with a name and nothing else: the graph never calls
// the other methods.
type res string

func (r res) Name() string                  { return string(r) }
func (r res) Start(context.Context) error   { return nil }
func (r res) Stop(context.Context) error    { return nil }
func (r res) Monitor(context.Context) error { return nil }

func node(name string, role Role, deps ...string) Node {
	return Node{Resource: res(name), Role: role, DependsOn: deps}
}

func last(name string, deps ...string) Node {
	n := node(name, ActiveOnly, deps...)
	n.Last = true
	return n
}

// stack is the active head's stack from DESIGN.md.
func stack() []Node {
	return []Node{
		node("raid10", Both),
		node("drbd", Both, "raid10"),
		node("drbd-primary", ActiveOnly, "drbd"),
		node("lvm", ActiveOnly, "drbd-primary"),
		node("xfs", ActiveOnly, "lvm"),
		node("ad", ActiveOnly, "xfs"),
		node("nfs", ActiveOnly, "xfs"),
		node("smb", ActiveOnly, "xfs", "ad"),
		last("vip", "nfs", "smb"),
	}
}

func TestOrders(t *testing.T) {
	tests := []struct {
		name  string
		nodes []Node
		start []string
	}{
		{"empty", nil, []string{}},
		{"single", []Node{node("a", Both)}, []string{"a"}},
		{"independent keep declaration order",
			[]Node{node("c", Both), node("a", Both), node("b", Both)},
			[]string{"c", "a", "b"}},
		{"dependency declared after its dependent",
			[]Node{node("top", Both, "bottom"), node("bottom", Both)},
			[]string{"bottom", "top"}},
		{"diamond",
			[]Node{node("d", Both, "b", "c"), node("c", Both, "a"), node("b", Both, "a"), node("a", Both)},
			[]string{"a", "c", "b", "d"}},
		{"tie broken by declaration, not by readiness time",
			// x is ready from the start but declared after z; z only
			// becomes ready once y is up. Declaration order still wins.
			[]Node{node("y", Both), node("z", Both, "y"), node("x", Both)},
			[]string{"y", "z", "x"}},
		{"duplicate dependency entries are harmless",
			[]Node{node("a", Both), node("b", Both, "a", "a")},
			[]string{"a", "b"}},
		{"the NAS stack", stack(),
			[]string{"raid10", "drbd", "drbd-primary", "lvm", "xfs", "ad", "nfs", "smb", "vip"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := New(tt.nodes...)
			if err != nil {
				t.Fatal(err)
			}
			if got := g.StartOrder(); !slices.Equal(got, tt.start) {
				t.Errorf("StartOrder = %v, want %v", got, tt.start)
			}
			stop := slices.Clone(tt.start)
			slices.Reverse(stop)
			if got := g.StopOrder(); !slices.Equal(got, stop) {
				t.Errorf("StopOrder = %v, want %v", got, stop)
			}
		})
	}
}

func TestDependentsAndDependencies(t *testing.T) {
	g, err := New(stack()...)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		dependents []string
		deps       []string
	}{
		{"xfs", []string{"vip", "smb", "nfs", "ad"}, []string{"raid10", "drbd", "drbd-primary", "lvm"}},
		{"ad", []string{"vip", "smb"}, []string{"raid10", "drbd", "drbd-primary", "lvm", "xfs"}},
		{"vip", nil, []string{"raid10", "drbd", "drbd-primary", "lvm", "xfs", "ad", "nfs", "smb"}},
		{"raid10", []string{"vip", "smb", "nfs", "ad", "xfs", "lvm", "drbd-primary", "drbd"}, nil},
		{"nosuch", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.Dependents(tt.name); !slices.Equal(got, tt.dependents) {
				t.Errorf("Dependents = %v, want %v", got, tt.dependents)
			}
			if got := g.Dependencies(tt.name); !slices.Equal(got, tt.deps) {
				t.Errorf("Dependencies = %v, want %v", got, tt.deps)
			}
		})
	}
}

func TestSubgraph(t *testing.T) {
	g, err := New(stack()...)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		roles []Role
		start []string
	}{
		{[]Role{Both}, []string{"raid10", "drbd"}},
		{[]Role{ActiveOnly}, []string{"drbd-primary", "lvm", "xfs", "ad", "nfs", "smb", "vip"}},
		{[]Role{Both, ActiveOnly}, g.StartOrder()},
		{nil, []string{}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.roles), func(t *testing.T) {
			s := g.Subgraph(tt.roles...)
			if got := s.StartOrder(); !slices.Equal(got, tt.start) {
				t.Errorf("StartOrder = %v, want %v", got, tt.start)
			}
			for _, n := range s.Nodes() {
				for _, d := range n.DependsOn {
					if _, ok := s.Node(d); !ok {
						t.Errorf("%s keeps a dependency on dropped %s", n.Name(), d)
					}
				}
			}
		})
	}
}

// Dropping a middle node must not lose the ordering it carried.
func TestFilterKeepsOrderThroughDroppedNodes(t *testing.T) {
	g, err := New(node("top", Both, "mid"), node("mid", Both, "bottom"), node("bottom", Both))
	if err != nil {
		t.Fatal(err)
	}
	s := g.Filter(func(n Node) bool { return n.Name() != "mid" })
	if got, want := s.StartOrder(), []string{"bottom", "top"}; !slices.Equal(got, want) {
		t.Errorf("StartOrder = %v, want %v", got, want)
	}
	if got, want := s.Dependencies("top"), []string{"bottom"}; !slices.Equal(got, want) {
		t.Errorf("Dependencies(top) = %v, want %v", got, want)
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name  string
		nodes []Node
		is    error
		msg   []string // substrings the message must carry
	}{
		{"duplicate", []Node{node("a", Both), node("a", Both)},
			ErrDuplicate, []string{`"a" is declared twice`}},
		{"unknown dependency", []Node{node("a", Both, "ghost")},
			ErrUnknownDep, []string{`"a" depends on "ghost"`}},
		{"self cycle", []Node{node("a", Both, "a")},
			ErrCycle, []string{"a -> a"}},
		{"three-node cycle", []Node{node("x", Both), node("a", Both, "c"), node("b", Both, "a"), node("c", Both, "b", "x")},
			ErrCycle, []string{"a -> c -> b -> a"}},
		{"nil resource", []Node{{}}, ErrInvalid, []string{"no Resource"}},
		{"empty name", []Node{node("", Both)}, ErrInvalid, []string{"empty name"}},
		{"bad role", []Node{node("a", Role(7))}, ErrInvalid, []string{"unknown role"}},
		{"negative timeout", []Node{{Resource: res("a"), Policy: Policy{StopTimeout: -time.Second}}},
			ErrInvalid, []string{"StopTimeout is negative"}},
		{"backoff shrinking", []Node{{Resource: res("a"), Policy: Policy{Backoff: BackoffPolicy{Multiplier: 0.5}}}},
			ErrInvalid, []string{"Multiplier 0.5 is below 1"}},
		{"both-node on an active-only node", []Node{node("lvm", ActiveOnly), node("drbd", Both, "lvm")},
			ErrRole, []string{`"drbd" runs on both heads but depends on "lvm"`}},
		{"structure B: vip before the file services",
			[]Node{node("xfs", ActiveOnly), node("nfs", ActiveOnly, "xfs", "vip"), node("smb", ActiveOnly, "xfs", "vip"), last("vip", "xfs")},
			ErrNotLast, []string{`"vip" is the service address and must come up last`, `does not depend on "nfs", "smb"`, "structure B"}},
		{"structure B: a service forgotten",
			[]Node{node("xfs", ActiveOnly), node("nfs", ActiveOnly, "xfs"), node("ad", ActiveOnly, "xfs"), last("vip", "nfs")},
			ErrNotLast, []string{`does not depend on "ad"`}},
		{"vip on both heads", []Node{func() Node { n := node("vip", Both); n.Last = true; return n }()},
			ErrNotLast, []string{"standby must never hold the service address"}},
		{"two Last nodes", []Node{last("vip1"), last("vip2", "vip1")},
			ErrNotLast, []string{"only one node can be Last"}},
		{"several problems at once", []Node{node("a", Both), node("a", Both), node("b", Both, "ghost")},
			ErrUnknownDep, []string{"declared twice", `"ghost"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := New(tt.nodes...)
			if err == nil {
				t.Fatalf("New succeeded with order %v", g.StartOrder())
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
		})
	}
}

func TestCycleErrorPath(t *testing.T) {
	_, err := New(node("a", Both, "b"), node("b", Both, "a"))
	var ce *CycleError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is no *CycleError", err)
	}
	if want := []string{"a", "b", "a"}; !slices.Equal(ce.Path, want) {
		t.Errorf("Path = %v, want %v", ce.Path, want)
	}
}

func TestPolicyDefaults(t *testing.T) {
	g, err := New(Node{Resource: res("a"), Policy: Policy{StartTimeout: time.Second, MigrationThreshold: -1}})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := g.Node("a")
	want := Policy{}.WithDefaults()
	want.StartTimeout = time.Second
	want.MigrationThreshold = -1
	if n.Policy != want {
		t.Errorf("Policy = %+v, want %+v", n.Policy, want)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Policy{}.WithDefaults().Backoff
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for n, w := range want {
		if got := b.Delay(n); got != w*time.Second {
			t.Errorf("Delay(%d) = %s, want %s", n, got, w*time.Second)
		}
	}
	if got := b.Delay(1 << 30); got != 30*time.Second {
		t.Errorf("Delay(huge) = %s, want the cap", got)
	}
}

// fakePromoter records which role calls reach it.
type fakePromoter struct {
	res
	calls []string
}

func (p *fakePromoter) Promote(context.Context) error {
	p.calls = append(p.calls, "promote")
	return nil
}
func (p *fakePromoter) Demote(context.Context) error { p.calls = append(p.calls, "demote"); return nil }

func TestPrimary(t *testing.T) {
	p := &fakePromoter{res: "drbd"}
	var _ services.Promoter = p
	r := Primary(p)
	if r.Name() != "drbd-primary" {
		t.Errorf("Name = %q", r.Name())
	}
	_ = r.Start(context.Background())
	_ = r.Stop(context.Background())
	if want := []string{"promote", "demote"}; !slices.Equal(p.calls, want) {
		t.Errorf("calls = %v, want %v", p.calls, want)
	}
}

// randomDAG declares n nodes in a shuffled order; edges only go from a
// higher to a lower rank, so the graph is acyclic by construction.
func randomDAG(r *rand.Rand, n int) ([]Node, map[string][]string) {
	rank := r.Perm(n)
	deps := map[string][]string{}
	nodes := make([]Node, n)
	density := r.Float64()
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		for j := range n {
			if rank[j] < rank[i] && r.Float64() < density*0.4 {
				deps[name] = append(deps[name], fmt.Sprintf("n%d", j))
			}
		}
		nodes[i] = node(name, Both, deps[name]...)
	}
	return nodes, deps
}

// reaches reports whether from depends on to, directly or not.
func reaches(deps map[string][]string, from, to string) bool {
	seen := map[string]bool{}
	todo := slices.Clone(deps[from])
	for len(todo) > 0 {
		d := todo[0]
		todo = todo[1:]
		if d == to {
			return true
		}
		if !seen[d] {
			seen[d] = true
			todo = append(todo, deps[d]...)
		}
	}
	return false
}

func TestOrderProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2)) // seeded: a failure reproduces
	for c := range 400 {
		nodes, deps := randomDAG(r, 1+r.IntN(25))
		g, err := New(nodes...)
		if err != nil {
			t.Fatalf("case %d: %v", c, err)
		}
		start, stop := g.StartOrder(), g.StopOrder()
		pos := map[string]int{}
		for i, name := range start {
			pos[name] = i
		}
		if len(pos) != len(nodes) || len(start) != len(nodes) {
			t.Fatalf("case %d: start order %v is not a permutation of %d nodes", c, start, len(nodes))
		}
		for name, ds := range deps {
			for _, d := range ds {
				if pos[d] >= pos[name] {
					t.Fatalf("case %d: %s starts before its dependency %s: %v", c, name, d, start)
				}
			}
		}
		rev := slices.Clone(start)
		slices.Reverse(rev)
		if !slices.Equal(stop, rev) {
			t.Fatalf("case %d: stop %v is not the reverse of start %v", c, stop, start)
		}
		// Tie-break: each step takes the earliest-declared ready node.
		done := map[string]bool{}
		for i, name := range start {
			for _, n := range nodes {
				ready := !done[n.Name()] && !slices.ContainsFunc(deps[n.Name()], func(d string) bool { return !done[d] })
				if ready {
					if n.Name() != name {
						t.Fatalf("case %d: step %d took %s, but %s was ready and declared first", c, i, name, n.Name())
					}
					break
				}
			}
			done[name] = true
		}
		// Dependents: exactly the nodes that reach x, in stop order.
		x := nodes[r.IntN(len(nodes))].Name()
		var want []string
		for _, name := range stop {
			if reaches(deps, name, x) {
				want = append(want, name)
			}
		}
		if got := g.Dependents(x); !slices.Equal(got, want) {
			t.Fatalf("case %d: Dependents(%s) = %v, want %v", c, x, got, want)
		}
	}
}

// Closing a random DAG with one back edge must be caught, and the cycle
// named must really be one.
func TestCycleProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for c := range 300 {
		nodes, deps := randomDAG(r, 2+r.IntN(20))
		// Find a pair a -> ... -> b and add b -> a.
		var a, b string
		for _, n := range nodes {
			if len(deps[n.Name()]) > 0 {
				a, b = n.Name(), deps[n.Name()][r.IntN(len(deps[n.Name()]))]
				break
			}
		}
		if a == "" {
			a, b = nodes[0].Name(), nodes[0].Name()
		}
		for i := range nodes {
			if nodes[i].Name() == b {
				nodes[i].DependsOn = append(slices.Clone(nodes[i].DependsOn), a)
				deps[b] = append(deps[b], a)
			}
		}
		_, err := New(nodes...)
		var ce *CycleError
		if !errors.As(err, &ce) {
			t.Fatalf("case %d: want a cycle error, got %v", c, err)
		}
		p := ce.Path
		if len(p) < 2 || p[0] != p[len(p)-1] {
			t.Fatalf("case %d: path %v is not closed", c, p)
		}
		for i := 0; i+1 < len(p); i++ {
			if !slices.Contains(deps[p[i]], p[i+1]) {
				t.Fatalf("case %d: %s -> %s in %v is no edge", c, p[i], p[i+1], p)
			}
		}
	}
}
