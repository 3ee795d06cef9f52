// Package graph holds the dependency graph of a Tandem head's layers,
// declared once as data. Start order is derived from it bottom-up and
// stop order is its exact reverse, so no code path can order layers by
// hand. New rejects graphs that would let the service address come up
// before the services behind it: clients would reach a head that cannot
// serve them yet.
package graph

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"tandem.dev/tandem/services"
)

// Role says which head runs a node.
type Role int

const (
	// Both: the standby runs it too (RAID10, DRBD as secondary).
	Both Role = iota
	// ActiveOnly: only the active head runs it (DRBD primary, LVM, XFS,
	// NFS, SMB, AD, VIP).
	ActiveOnly
)

func (r Role) String() string {
	switch r {
	case Both:
		return "both"
	case ActiveOnly:
		return "active"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// MarshalText makes a Role print as a word in `tandem status --json`.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Node is one layer and what it needs below it.
type Node struct {
	Resource  services.Resource
	DependsOn []string // names of nodes that must run first
	Policy    Policy   // zero fields take the defaults
	Role      Role
	// Last marks the service address (the VIP). New requires it to
	// depend, directly or not, on every other ActiveOnly node, so it is
	// always the last thing up and the first thing down.
	Last bool
}

// Name is the node's resource name.
func (n Node) Name() string { return n.Resource.Name() }

// Validation errors; New's error wraps one or more of them.
var (
	ErrInvalid    = errors.New("invalid node")
	ErrDuplicate  = errors.New("duplicate name")
	ErrUnknownDep = errors.New("unknown dependency")
	ErrCycle      = errors.New("dependency cycle")
	ErrRole       = errors.New("role mismatch")
	ErrNotLast    = errors.New("service address not last")
)

// CycleError names the nodes of one cycle, first name repeated at the end.
type CycleError struct{ Path []string }

func (e *CycleError) Error() string {
	return fmt.Sprintf("graph: dependency cycle: %s (each depends on the next)", strings.Join(e.Path, " -> "))
}

func (e *CycleError) Is(target error) bool { return target == ErrCycle }

// Graph is a validated, immutable dependency graph.
type Graph struct {
	nodes []Node         // declaration order, policies defaulted
	index map[string]int // name -> declaration index
	deps  [][]int        // direct dependencies, deduplicated
	order []int          // start order (declaration indexes)
}

// New validates nodes and derives the start order. It reports every
// problem it finds, joined, so a bad config is fixed in one round.
func New(nodes ...Node) (*Graph, error) {
	g := &Graph{index: make(map[string]int, len(nodes))}
	var errs []error
	for i, n := range nodes {
		if n.Resource == nil {
			errs = append(errs, fmt.Errorf("graph: node #%d: %w: no Resource", i, ErrInvalid))
			continue
		}
		name := n.Name()
		if name == "" {
			errs = append(errs, fmt.Errorf("graph: node #%d: %w: empty name", i, ErrInvalid))
			continue
		}
		if _, dup := g.index[name]; dup {
			errs = append(errs, fmt.Errorf("graph: %w: %q is declared twice", ErrDuplicate, name))
			continue
		}
		if n.Role != Both && n.Role != ActiveOnly {
			errs = append(errs, fmt.Errorf("graph: %q: %w: unknown role %d", name, ErrInvalid, int(n.Role)))
		}
		n.Policy = n.Policy.WithDefaults()
		if err := n.Policy.validate(); err != nil {
			errs = append(errs, fmt.Errorf("graph: %q: %w: policy: %w", name, ErrInvalid, err))
		}
		n.DependsOn = slices.Clone(n.DependsOn)
		g.index[name] = len(g.nodes)
		g.nodes = append(g.nodes, n)
	}

	g.deps = make([][]int, len(g.nodes))
	for i, n := range g.nodes {
		for _, d := range n.DependsOn {
			j, ok := g.index[d]
			if !ok {
				errs = append(errs, fmt.Errorf("graph: %q depends on %q: %w", n.Name(), d, ErrUnknownDep))
				continue
			}
			if slices.Contains(g.deps[i], j) {
				continue
			}
			g.deps[i] = append(g.deps[i], j)
			// The standby runs only Both nodes; one of them leaning on
			// an ActiveOnly node would have nothing under it there.
			if n.Role == Both && g.nodes[j].Role == ActiveOnly {
				errs = append(errs, fmt.Errorf("graph: %q runs on both heads but depends on %q, which runs on the active head only: %w", n.Name(), d, ErrRole))
			}
		}
	}

	if c := g.findCycle(); c != nil {
		// Orders and the Last rule mean nothing on a cyclic graph.
		return nil, errors.Join(append(errs, c)...)
	}
	g.order = g.topoOrder()
	errs = append(errs, g.checkLast()...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return g, nil
}

// findCycle returns the first cycle met by a depth-first walk in
// declaration order, or nil.
func (g *Graph) findCycle() *CycleError {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(g.nodes))
	var stack []int
	var walk func(i int) *CycleError
	walk = func(i int) *CycleError {
		color[i] = grey
		stack = append(stack, i)
		for _, j := range g.deps[i] {
			switch color[j] {
			case grey:
				start := slices.Index(stack, j)
				path := make([]string, 0, len(stack)-start+1)
				for _, k := range stack[start:] {
					path = append(path, g.nodes[k].Name())
				}
				return &CycleError{Path: append(path, g.nodes[j].Name())}
			case white:
				if c := walk(j); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		return nil
	}
	for i := range g.nodes {
		if color[i] == white {
			if c := walk(i); c != nil {
				return c
			}
		}
	}
	return nil
}

// topoOrder is Kahn's algorithm that always takes the ready node
// declared first, so the order is stable and reads like the config.
func (g *Graph) topoOrder() []int {
	pending := make([]int, len(g.nodes)) // unmet dependencies
	dependents := make([][]int, len(g.nodes))
	for i, ds := range g.deps {
		pending[i] = len(ds)
		for _, j := range ds {
			dependents[j] = append(dependents[j], i)
		}
	}
	var ready []int // kept sorted by declaration index
	for i, p := range pending {
		if p == 0 {
			ready = append(ready, i)
		}
	}
	order := make([]int, 0, len(g.nodes))
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		order = append(order, i)
		for _, k := range dependents[i] {
			if pending[k]--; pending[k] == 0 {
				at, _ := slices.BinarySearch(ready, k)
				ready = slices.Insert(ready, at, k)
			}
		}
	}
	return order
}

// checkLast enforces structure A: the Last node comes after every other
// ActiveOnly node because it depends on all of them.
func (g *Graph) checkLast() []error {
	var errs []error
	var lasts []string
	for i, n := range g.nodes {
		if !n.Last {
			continue
		}
		lasts = append(lasts, n.Name())
		if n.Role != ActiveOnly {
			errs = append(errs, fmt.Errorf("graph: %q is marked Last (the service address) but runs on both heads; the standby must never hold the service address: %w", n.Name(), ErrNotLast))
		}
		below := g.closure(i)
		var missing []string
		for j, m := range g.nodes {
			if j != i && m.Role == ActiveOnly && !below[j] {
				missing = append(missing, fmt.Sprintf("%q", m.Name()))
			}
		}
		if len(missing) > 0 {
			errs = append(errs, fmt.Errorf("graph: %q is the service address and must come up last, but it does not depend on %s: clients would reach the address before that service is ready (structure B); add it to %q's DependsOn, directly or through another node: %w",
				n.Name(), strings.Join(missing, ", "), n.Name(), ErrNotLast))
		}
	}
	if len(lasts) > 1 {
		errs = append(errs, fmt.Errorf("graph: only one node can be Last, not %s: %w", strings.Join(lasts, ", "), ErrNotLast))
	}
	return errs
}

// closure marks every node i depends on, directly or not.
func (g *Graph) closure(i int) []bool {
	seen := make([]bool, len(g.nodes))
	todo := slices.Clone(g.deps[i])
	for len(todo) > 0 {
		j := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if !seen[j] {
			seen[j] = true
			todo = append(todo, g.deps[j]...)
		}
	}
	return seen
}

func (g *Graph) names(idx []int) []string {
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = g.nodes[i].Name()
	}
	return out
}

// Len is the number of nodes.
func (g *Graph) Len() int { return len(g.nodes) }

// Node returns the node called name, its Policy defaulted.
func (g *Graph) Node(name string) (Node, bool) {
	i, ok := g.index[name]
	if !ok {
		return Node{}, false
	}
	n := g.nodes[i]
	n.DependsOn = slices.Clone(n.DependsOn)
	return n, true
}

// Nodes returns the nodes in start order.
func (g *Graph) Nodes() []Node {
	out := make([]Node, 0, len(g.order))
	for _, name := range g.StartOrder() {
		n, _ := g.Node(name)
		out = append(out, n)
	}
	return out
}

// StartOrder lists every node after all of its dependencies; among nodes
// that are ready together, the one declared first goes first.
func (g *Graph) StartOrder() []string { return g.names(g.order) }

// StopOrder is StartOrder reversed, exactly.
func (g *Graph) StopOrder() []string {
	s := g.StartOrder()
	slices.Reverse(s)
	return s
}

// Dependencies lists what name needs, directly or not, in start order.
// It is nil for an unknown name.
func (g *Graph) Dependencies(name string) []string {
	i, ok := g.index[name]
	if !ok {
		return nil
	}
	below := g.closure(i)
	var out []int
	for _, j := range g.order {
		if below[j] {
			out = append(out, j)
		}
	}
	return g.names(out)
}

// Dependents lists what needs name, directly or not, in stop order: the
// order to take them down before name itself is stopped.
func (g *Graph) Dependents(name string) []string {
	i, ok := g.index[name]
	if !ok {
		return nil
	}
	var out []int
	for _, j := range slices.Backward(g.order) {
		if g.closure(j)[i] {
			out = append(out, j)
		}
	}
	return g.names(out)
}

// Subgraph keeps the nodes whose role is one of roles, e.g.
// Subgraph(Both) for the standby.
func (g *Graph) Subgraph(roles ...Role) *Graph {
	return g.Filter(func(n Node) bool { return slices.Contains(roles, n.Role) })
}

// Filter keeps the nodes keep accepts. A kept node's dependencies on
// dropped nodes are treated as met from outside, but ordering through a
// dropped node is preserved: if a needs b needs c and b is dropped, a
// still starts after c.
func (g *Graph) Filter(keep func(Node) bool) *Graph {
	kept := make([]bool, len(g.nodes))
	for i, n := range g.nodes {
		kept[i] = keep(n)
	}
	h := &Graph{index: map[string]int{}}
	for i, n := range g.nodes {
		if !kept[i] {
			continue
		}
		// Nearest kept ancestors, walking through dropped nodes.
		var deps []string
		seen := make([]bool, len(g.nodes))
		todo := slices.Clone(g.deps[i])
		for len(todo) > 0 {
			j := todo[0]
			todo = todo[1:]
			if seen[j] {
				continue
			}
			seen[j] = true
			if kept[j] {
				deps = append(deps, g.nodes[j].Name())
			} else {
				todo = append(todo, g.deps[j]...)
			}
		}
		n.DependsOn = deps
		h.index[n.Name()] = len(h.nodes)
		h.nodes = append(h.nodes, n)
	}
	h.deps = make([][]int, len(h.nodes))
	for i, n := range h.nodes {
		for _, d := range n.DependsOn {
			h.deps[i] = append(h.deps[i], h.index[d])
		}
	}
	h.order = h.topoOrder()
	return h
}
