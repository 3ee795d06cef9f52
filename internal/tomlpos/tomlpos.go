// Package tomlpos indexes where every key of a TOML document is written,
// so that both syntax errors and later semantic errors can name
// file:line:col and the key, as operators expect from a config checker.
//
// IndexKeys and Index are the index alone; Decode adds strict decoding and
// Error values for the build-time configs (image specs, boards).
package tomlpos

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

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

func (es Errors) Error() string { return Lines(es) }

// Lines joins the texts of errs, one a line.
func Lines[E error](errs []E) string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Sort orders the errors by line, then column, then key.
func (es Errors) Sort() {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(a.Position.Compare(b.Position), strings.Compare(a.Key, b.Key))
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

// Doc is a decoded file: its name and the position of every key in it.
type Doc struct {
	File string
	*Index
}

// Decode strictly decodes data into v (unknown keys are errors) and indexes
// key positions. Every error it returns is an *Error or Errors, and names
// keys by indexed path.
func Decode(file string, data []byte, v any) (*Doc, error) {
	ix, _ := IndexKeys(data) // a syntax error is the decoder's to report
	doc := &Doc{File: file, Index: ix}
	d := toml.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return nil, doc.wrap(err)
	}
	return doc, nil
}

// Pos returns where key is written or, for a key set only implicitly (a
// default), its nearest enclosing key that is written; ok is false if
// neither is in the file.
func (d *Doc) Pos(key string) (p Position, ok bool) {
	p, _ = d.Lookup(key)
	return p, p != Position{}
}

// Errorf builds an error located at key, or at its nearest enclosing key.
func (d *Doc) Errorf(key, format string, args ...any) *Error {
	p, _ := d.Lookup(key)
	return &Error{File: d.File, Position: p, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (d *Doc) wrap(err error) error {
	// Strict errors first: they also satisfy errors.As for DecodeError.
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		f := d.Finder()
		es := make(Errors, 0, len(sm.Errors))
		for i := range sm.Errors {
			es = append(es, d.located(f, &sm.Errors[i], "unknown key"))
		}
		return es.Err()
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return d.located(d.Finder(), de, tidy(de.Error()))
	}
	return &Error{File: d.File, Msg: tidy(err.Error())}
}

func (d *Doc) located(f *Finder, de *toml.DecodeError, msg string) *Error {
	at, _, path := f.Locate(de)
	return &Error{File: d.File, Position: at, Key: path, Msg: msg}
}

// tidy drops go-toml's own "toml: " prefix; the file name replaces it.
func tidy(s string) string { return strings.TrimPrefix(s, "toml: ") }
