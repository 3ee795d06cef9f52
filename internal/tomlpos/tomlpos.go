// Package tomlpos decodes TOML strictly and keeps the position of every key,
// so that both syntax errors and later semantic errors can name
// file:line:col and the key, as operators expect from a config checker.
package tomlpos

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Position is a 1-based line and column.
type Position struct{ Line, Col int }

// Error is one problem in a config file.
type Error struct {
	File string
	Position
	Key string // dotted path, with [i] for array elements; may be empty
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is a list of problems, reported together and sorted by position.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Sort orders the errors by line, then column, then key.
func (es Errors) Sort() {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		return a.Key < b.Key
	})
}

// Err returns nil for an empty list, so callers can `return es.Err()`.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	es.Sort()
	return es
}

// Doc is a parsed file: its name and the position of every key in it.
type Doc struct {
	File string
	pos  map[string]Position
	// lastIndex maps an array-of-tables path to its newest element, so a
	// later [a.b] header lands under a[n].
	lastIndex map[string]string
}

// Decode strictly decodes data into v (unknown keys are errors) and indexes
// key positions. Every error it returns is an *Error or Errors.
func Decode(file string, data []byte, v any) (*Doc, error) {
	doc := &Doc{File: file, pos: map[string]Position{}}
	if err := doc.index(data); err != nil {
		return nil, err
	}
	d := toml.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return nil, doc.wrap(err)
	}
	return doc, nil
}

// Pos returns where key is defined. For a key set only implicitly (a
// default) it falls back to the nearest enclosing table that is present.
func (d *Doc) Pos(key string) (Position, bool) {
	for k := key; k != ""; k = parent(k) {
		if p, ok := d.pos[k]; ok {
			return p, true
		}
	}
	return Position{}, false
}

// Has reports whether key was written in the file.
func (d *Doc) Has(key string) bool { _, ok := d.pos[key]; return ok }

// Errorf builds an error located at key.
func (d *Doc) Errorf(key, format string, args ...any) *Error {
	p, _ := d.Pos(key)
	return &Error{File: d.File, Position: p, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func parent(k string) string {
	if strings.HasSuffix(k, "]") {
		if i := strings.LastIndexByte(k, '['); i >= 0 {
			return k[:i]
		}
	}
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		return k[:i]
	}
	return ""
}

func (d *Doc) wrap(err error) error {
	// Strict errors first: they also satisfy errors.As for DecodeError.
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		var es Errors
		for i := range sm.Errors {
			e := &sm.Errors[i]
			line, col := e.Position()
			es = append(es, &Error{File: d.File, Position: Position{line, col}, Key: strings.Join(e.Key(), "."), Msg: "unknown key"})
		}
		return es.Err()
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return &Error{File: d.File, Position: Position{line, col}, Key: strings.Join(de.Key(), "."), Msg: tidy(de.Error())}
	}
	return &Error{File: d.File, Msg: tidy(err.Error())}
}

// tidy drops go-toml's own "toml: " prefix; the file name replaces it.
func tidy(s string) string { return strings.TrimPrefix(s, "toml: ") }

// index walks the document with go-toml's parser and records key positions.
// Array-of-tables entries get [i] suffixes in order of appearance.
func (d *Doc) index(data []byte) error {
	var p unstable.Parser
	p.Reset(data)
	counts := map[string]int{}
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			path, pos := d.keyPath(&p, table, e.Key(), true)
			if e.Kind == unstable.ArrayTable {
				n := counts[path]
				counts[path] = n + 1
				path = fmt.Sprintf("%s[%d]", path, n)
			}
			table = path
			d.put(path, pos)
		case unstable.KeyValue:
			d.keyValue(&p, table, e)
		}
	}
	if err := p.Error(); err != nil {
		var pe *unstable.ParserError
		if errors.As(err, &pe) {
			sh := p.Shape(p.Range(pe.Highlight))
			return &Error{File: d.File, Position: Position{sh.Start.Line, sh.Start.Column}, Msg: pe.Message}
		}
		return &Error{File: d.File, Msg: err.Error()}
	}
	return nil
}

// keyPath joins the parts of a key below prefix. In table headers, a part
// naming an array of tables resolves to its newest element ([[a]] then
// [a.b] means a[n].b); the last part of a header is left to the caller.
func (d *Doc) keyPath(p *unstable.Parser, prefix string, it unstable.Iterator, header bool) (string, Position) {
	path := prefix
	if header {
		path = ""
	}
	var pos Position
	first := true
	for it.Next() {
		k := it.Node()
		if first {
			sh := p.Shape(k.Raw)
			pos = Position{sh.Start.Line, sh.Start.Column}
			first = false
		}
		part := string(k.Data)
		if strings.ContainsAny(part, ".[] ") || part == "" {
			part = strconv.Quote(part)
		}
		if path == "" {
			path = part
		} else {
			path += "." + part
		}
		if header && !it.IsLast() {
			if last, ok := d.lastIndex[path]; ok {
				path = last
			}
		}
	}
	return path, pos
}

func (d *Doc) put(path string, pos Position) {
	if _, ok := d.pos[path]; !ok {
		d.pos[path] = pos
	}
	if d.lastIndex == nil {
		d.lastIndex = map[string]string{}
	}
	if strings.HasSuffix(path, "]") {
		d.lastIndex[stripLastIndex(path)] = path
	}
}

func (d *Doc) keyValue(p *unstable.Parser, table string, e *unstable.Node) {
	path, pos := d.keyPath(p, table, e.Key(), false)
	d.put(path, pos)
	d.value(p, path, e.Value())
}

func (d *Doc) value(p *unstable.Parser, path string, v *unstable.Node) {
	switch v.Kind {
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			el := it.Node()
			elPath := fmt.Sprintf("%s[%d]", path, i)
			if pos, ok := nodePos(p, el); ok {
				d.put(elPath, pos)
			}
			d.value(p, elPath, el)
		}
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if kv := it.Node(); kv.Kind == unstable.KeyValue {
				d.keyValue(p, path, kv)
			}
		}
	}
}

// nodePos finds a position for a value node; containers have no Raw, so
// use their first child.
func nodePos(p *unstable.Parser, n *unstable.Node) (Position, bool) {
	if n.Raw.Length > 0 {
		sh := p.Shape(n.Raw)
		return Position{sh.Start.Line, sh.Start.Column}, true
	}
	it := n.Children()
	if it.Next() {
		c := it.Node()
		if c.Kind == unstable.KeyValue {
			k := c.Key()
			if k.Next() {
				sh := p.Shape(k.Node().Raw)
				return Position{sh.Start.Line, sh.Start.Column}, true
			}
		}
		return nodePos(p, c)
	}
	return Position{}, false
}

func stripLastIndex(path string) string {
	if i := strings.LastIndexByte(path, '['); i >= 0 {
		return path[:i]
	}
	return path
}
