package tomlpos

import (
	"cmp"
	"iter"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Position is a 1-based line and byte column, as go-toml reports them.
// The zero Position means "nowhere in the file".
type Position struct{ Line, Col int }

// Compare orders positions by line, then column.
func (p Position) Compare(q Position) int {
	return cmp.Or(cmp.Compare(p.Line, q.Line), cmp.Compare(p.Col, q.Col))
}

// Index maps dotted key paths with array indexes (node[1].name,
// storage.raid.disks[2]) to where they are written. go-toml gives
// positions only for syntax errors and unknown keys; semantic checks need
// them for every key, and defaults need to know which keys are present.
//
// A key-value is located at its key, every level of a [table] or
// [[array]] header at the header's first key, and an array element at its
// value. Path parts that are not bare keys are quoted (see Join).
//
// The methods of a nil *Index behave as for an empty document.
type Index struct {
	keys    map[string]Position
	headers map[string]bool // unindexed paths written as [table] or [[array]] headers
}

// IndexKeys walks data with go-toml's parser, in time linear in its size.
// It stops at the first syntax error, so a broken document is indexed up
// to that point; ok reports whether the whole document parsed.
func IndexKeys(data []byte) (ix *Index, ok bool) {
	w := &indexer{
		lines:  []int{0},
		arrays: map[string]int{},
		ix:     &Index{keys: map[string]Position{}, headers: map[string]bool{}},
	}
	for i, b := range data {
		if b == '\n' {
			w.lines = append(w.lines, i+1)
		}
	}
	var p unstable.Parser
	p.Reset(data)
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = w.header(e)
		case unstable.KeyValue:
			w.keyValue(table, e)
		}
	}
	return w.ix, p.Error() == nil
}

// Lookup finds where path is written (ok is true), or else the nearest
// enclosing key that is written (ok is false), so that "missing" errors
// point at the table they belong in. With neither it returns the zero
// Position.
func (ix *Index) Lookup(path string) (p Position, ok bool) {
	if ix == nil {
		return Position{}, false
	}
	if p, ok := ix.keys[path]; ok {
		return p, true
	}
	for path != "" {
		path = Parent(path)
		if p, ok := ix.keys[path]; ok {
			return p, false
		}
	}
	return Position{}, false
}

// Has reports whether path is written in the document.
func (ix *Index) Has(path string) bool {
	if ix == nil {
		return false
	}
	_, ok := ix.keys[path]
	return ok
}

// Header reports whether path, without array indexes, was written as a
// [table] or [[array]] header rather than as a key.
func (ix *Index) Header(path string) bool {
	return ix != nil && ix.headers[Unindexed(path)]
}

// All yields every indexed path and its position, in no set order.
func (ix *Index) All() iter.Seq2[string, Position] {
	return func(yield func(string, Position) bool) {
		if ix == nil {
			return
		}
		for path, p := range ix.keys {
			if !yield(path, p) {
				return
			}
		}
	}
}

// Finder maps go-toml's error keys, which have no array indexes
// (node.name), to indexed paths (node[1].name).
type Finder struct {
	paths map[string][]entry // by unindexed path, sorted by position
}

type entry struct {
	path string
	at   Position
}

// Finder builds a Finder over every indexed path.
func (ix *Index) Finder() *Finder {
	f := &Finder{paths: map[string][]entry{}}
	for path, p := range ix.All() {
		u := Unindexed(path)
		f.paths[u] = append(f.paths[u], entry{path, p})
	}
	for _, es := range f.paths {
		sort.Slice(es, func(i, j int) bool {
			if c := es[i].at.Compare(es[j].at); c != 0 {
				return c < 0
			}
			// node and node[0] share a position; prefer the indexed one.
			return len(es[i].path) < len(es[j].path)
		})
	}
	return f
}

// Nearest returns the written path whose unindexed form is key and that
// starts at or before at, the latest such.
func (f *Finder) Nearest(key string, at Position) (string, bool) {
	es := f.paths[key]
	i := sort.Search(len(es), func(i int) bool { return at.Compare(es[i].at) < 0 })
	if i == 0 {
		return "", false
	}
	return es[i-1].path, true
}

// Locate places a go-toml decode error: its position, its key as go-toml
// names it (unindexed, joined with Join; empty for syntax errors) and the
// indexed path of that key, or the key itself if it is not indexed.
func (f *Finder) Locate(de *toml.DecodeError) (at Position, key, path string) {
	line, col := de.Position()
	at = Position{line, col}
	for _, part := range de.Key() {
		key = Join(key, part)
	}
	path, ok := f.Nearest(key, at)
	if !ok {
		path = key
	}
	return at, key, path
}

// Join appends a key part to a path, quoting parts that are not bare
// keys so that "a.b" = 1 does not read as a.b.
func Join(base, key string) string {
	if !bareKey(key) {
		key = strconv.Quote(key)
	}
	if base == "" {
		return key
	}
	return base + "." + key
}

func bareKey(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

// scan calls f for each byte of path that is outside quoted parts.
func scan(path string, f func(i int)) {
	quoted := false
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted:
			f(i)
		}
	}
}

// Parent strips the last ".key" or "[i]" from a path; it is "" at the top.
func Parent(path string) string {
	last := 0
	scan(path, func(i int) {
		if path[i] == '.' || path[i] == '[' {
			last = i
		}
	})
	return path[:last]
}

// Unindexed drops array indexes: node[1].name -> node.name.
func Unindexed(path string) string {
	if !strings.Contains(path, "[") {
		return path
	}
	var b strings.Builder
	start, depth := 0, 0
	scan(path, func(i int) {
		switch path[i] {
		case '[':
			if depth == 0 {
				b.WriteString(path[start:i])
			}
			depth++
		case ']':
			if depth--; depth == 0 {
				start = i + 1
			}
		}
	})
	if depth == 0 {
		b.WriteString(path[start:])
	}
	return b.String()
}

func indexed(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

type indexer struct {
	lines  []int          // offsets of line starts
	arrays map[string]int // element count per array-of-tables path
	ix     *Index
}

func (w *indexer) at(offset uint32) Position {
	o := int(offset)
	// The last line start at or before o.
	i := max(sort.Search(len(w.lines), func(i int) bool { return w.lines[i] > o })-1, 0)
	return Position{Line: i + 1, Col: o - w.lines[i] + 1}
}

func (w *indexer) set(path string, p Position) {
	if _, ok := w.ix.keys[path]; !ok {
		w.ix.keys[path] = p
	}
}

// header resolves a [table] or [[array]] header to an indexed path. A
// header that passes through an array of tables means its last element,
// as TOML defines.
func (w *indexer) header(e *unstable.Node) string {
	path := ""
	var p Position
	it := e.Key()
	for first := true; it.Next(); first = false {
		part := it.Node()
		if first {
			// Every level of a header is located at the header's key, as
			// go-toml locates its own errors.
			p = w.at(part.Raw.Offset)
		}
		path = Join(path, string(part.Data))
		if it.IsLast() && e.Kind == unstable.ArrayTable {
			n := w.arrays[path]
			w.arrays[path] = n + 1
			w.set(path, p)
			path = indexed(path, n)
		} else if n := w.arrays[path]; n > 0 {
			path = indexed(path, n-1)
		}
		w.set(path, p)
	}
	w.ix.headers[Unindexed(path)] = true
	return path
}

func (w *indexer) keyValue(table string, kv *unstable.Node) {
	path := table
	var p Position
	it := kv.Key()
	for first := true; it.Next(); first = false {
		part := it.Node()
		if first {
			p = w.at(part.Raw.Offset)
		}
		path = Join(path, string(part.Data))
		w.set(path, p)
	}
	w.value(path, kv.Value(), p)
}

// value indexes array elements and inline-table keys below path and
// returns where v is written. go-toml gives arrays no range, so an array
// is located by its first element, or by its key if empty; computing that
// bottom-up keeps deeply nested arrays linear.
func (w *indexer) value(path string, v *unstable.Node, fallback Position) Position {
	p := fallback
	if v.Raw.Length > 0 {
		p = w.at(v.Raw.Offset)
	}
	switch v.Kind {
	case unstable.Array:
		i := 0
		for it := v.Children(); it.Next(); i++ {
			elPath := indexed(path, i)
			ep := w.value(elPath, it.Node(), fallback)
			w.set(elPath, ep)
			if i == 0 && v.Raw.Length == 0 {
				p = ep
			}
		}
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			if kv := it.Node(); kv.Kind == unstable.KeyValue {
				w.keyValue(path, kv)
			}
		}
	}
	return p
}
