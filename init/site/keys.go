package site

import (
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// pos is a 1-based line and byte column, as go-toml reports them.
type pos struct{ line, col int }

func (p pos) before(q pos) bool {
	return p.line < q.line || (p.line == q.line && p.col < q.col)
}

// keyIndex maps dotted key paths with array indexes (node[1].name,
// storage.raid.disks[2]) to where they are written. go-toml gives
// positions only for syntax errors and unknown keys; semantic checks need
// them for every key, and defaults need to know which keys are present.
//
// A key-value is located at its key; an array element at its value.
type keyIndex map[string]pos

// lookup finds path, or else the nearest enclosing key that is written,
// so that "missing" errors point at the table they belong in.
func (k keyIndex) lookup(path string) (pos, bool) {
	if p, ok := k[path]; ok {
		return p, true
	}
	for path != "" {
		path = parentPath(path)
		if p, ok := k[path]; ok {
			return p, false
		}
	}
	return pos{1, 1}, false
}

// parentPath strips the last ".key" or "[i]" from a path.
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

// unindexed drops array indexes: node[1].name -> node.name.
func unindexed(path string) string {
	if !strings.Contains(path, "[") {
		return path
	}
	var b strings.Builder
	skip := false
	for _, r := range path {
		switch {
		case r == '[':
			skip = true
		case r == ']':
			skip = false
		case !skip:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// keyFinder turns go-toml's unindexed error keys (node.name) into indexed
// paths (node[1].name): the written path with that unindexed form that
// starts at or before the error, the latest such.
type keyFinder map[string][]keyEntry

type keyEntry struct {
	path string
	at   pos
}

func (k keyIndex) finder() keyFinder {
	f := keyFinder{}
	for path, p := range k {
		u := unindexed(path)
		f[u] = append(f[u], keyEntry{path, p})
	}
	for _, es := range f {
		sort.Slice(es, func(i, j int) bool {
			if es[i].at != es[j].at {
				return es[i].at.before(es[j].at)
			}
			// node and node[0] share a position; prefer the indexed one.
			return len(es[i].path) < len(es[j].path)
		})
	}
	return f
}

func (f keyFinder) nearest(key string, at pos) (string, bool) {
	es := f[key]
	i := sort.Search(len(es), func(i int) bool { return at.before(es[i].at) })
	if i == 0 {
		return "", false
	}
	return es[i-1].path, true
}

type indexer struct {
	data    []byte
	lines   []int // offsets of line starts
	keys    keyIndex
	headers map[string]bool // paths written as [table] or [[array]] headers
	arrays  map[string]int  // element count per array-table path
}

// indexKeys walks the document with go-toml's parser. It stops at the
// first syntax error, so a broken document is indexed up to that point.
// It also returns the paths written as table headers, and whether the
// whole document parsed.
func indexKeys(data []byte) (keyIndex, map[string]bool, bool) {
	ix := &indexer{
		data:    data,
		lines:   []int{0},
		keys:    keyIndex{},
		headers: map[string]bool{},
		arrays:  map[string]int{},
	}
	for i, b := range data {
		if b == '\n' {
			ix.lines = append(ix.lines, i+1)
		}
	}
	var p unstable.Parser
	p.Reset(data)
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = ix.header(e)
		case unstable.KeyValue:
			ix.keyValue(table, e)
		}
	}
	return ix.keys, ix.headers, p.Error() == nil
}

func (ix *indexer) at(offset uint32) pos {
	o := int(offset)
	// The last line start at or before o.
	i := sort.Search(len(ix.lines), func(i int) bool { return ix.lines[i] > o }) - 1
	if i < 0 {
		i = 0
	}
	return pos{line: i + 1, col: o - ix.lines[i] + 1}
}

func (ix *indexer) set(path string, p pos) {
	if _, ok := ix.keys[path]; !ok {
		ix.keys[path] = p
	}
}

// join appends a key part to a path, quoting parts that are not bare
// keys so that "a.b" = 1 does not read as a.b.
func join(base, key string) string {
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

func indexed(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// header resolves a [table] or [[array]] header to an indexed path. A
// header that passes through an array of tables means its last element,
// as TOML defines.
func (ix *indexer) header(e *unstable.Node) string {
	path := ""
	var p pos
	it := e.Key()
	for first := true; it.Next(); first = false {
		part := it.Node()
		if first {
			// Every level of a header is located at the header's key, as
			// go-toml locates its own errors.
			p = ix.at(part.Raw.Offset)
		}
		path = join(path, string(part.Data))
		if it.IsLast() && e.Kind == unstable.ArrayTable {
			n := ix.arrays[path]
			ix.arrays[path] = n + 1
			ix.set(path, p)
			path = indexed(path, n)
		} else if n := ix.arrays[path]; n > 0 {
			path = indexed(path, n-1)
		}
		ix.set(path, p)
	}
	ix.headers[unindexed(path)] = true
	return path
}

func (ix *indexer) keyValue(table string, kv *unstable.Node) {
	path := table
	var p pos
	it := kv.Key()
	for first := true; it.Next(); first = false {
		part := it.Node()
		if first {
			p = ix.at(part.Raw.Offset)
		}
		path = join(path, string(part.Data))
		ix.set(path, p)
	}
	ix.value(path, kv.Value(), p)
}

// value indexes array elements and inline-table keys below path and
// returns where v is written. go-toml gives arrays no range, so an array
// is located by its first element, or by its key if empty; computing that
// bottom-up keeps deeply nested arrays linear.
func (ix *indexer) value(path string, v *unstable.Node, fallback pos) pos {
	p := fallback
	if v.Raw.Length > 0 {
		p = ix.at(v.Raw.Offset)
	}
	switch v.Kind {
	case unstable.Array:
		i := 0
		for it := v.Children(); it.Next(); i++ {
			elPath := indexed(path, i)
			ep := ix.value(elPath, it.Node(), fallback)
			ix.set(elPath, ep)
			if i == 0 && v.Raw.Length == 0 {
				p = ep
			}
		}
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			if kv := it.Node(); kv.Kind == unstable.KeyValue {
				ix.keyValue(path, kv)
			}
		}
	}
	return p
}
