package site

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"tandem.dev/tandem/internal/tomlpos"
)

// Error is one problem in a site config, located by file:line:col and,
// when it concerns a key, by the key path (e.g. storage.raid.disks[2]).
type Error struct {
	File string
	Line int
	Col  int
	Path string // empty for syntax errors that concern no key
	Msg  string
	Err  error // the decoder's error, if any
}

func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Col, e.Path, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// ValidationErrors is every problem found in one config, sorted by
// position, so the operator fixes them all in one pass.
type ValidationErrors []*Error

func (v ValidationErrors) Error() string { return tomlpos.Lines(v) }

// Unwrap lets errors.As find the individual *Error values.
func (v ValidationErrors) Unwrap() []error {
	errs := make([]error, len(v))
	for i, e := range v {
		errs[i] = e
	}
	return errs
}

func (v ValidationErrors) sort() {
	slices.SortStableFunc(v, func(a, b *Error) int {
		return cmp.Or(
			tomlpos.Position{Line: a.Line, Col: a.Col}.Compare(tomlpos.Position{Line: b.Line, Col: b.Col}),
			strings.Compare(a.Path, b.Path),
			strings.Compare(a.Msg, b.Msg))
	})
}

// decodeError turns go-toml's errors into positioned ones with key paths.
func (c *Config) decodeError(err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		f := c.keys.Finder()
		verrs := make(ValidationErrors, 0, len(strict.Errors))
		for i := range strict.Errors {
			verrs = append(verrs, c.fromDecodeError(&strict.Errors[i], f))
		}
		verrs.sort()
		return verrs
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return c.fromDecodeError(de, c.keys.Finder())
	}
	// go-toml documents only the two types above; anything else has no
	// position, so it is pinned to the start of the file.
	return &Error{File: c.file, Line: 1, Col: 1, Msg: strings.TrimPrefix(err.Error(), "toml: "), Err: err}
}

func (c *Config) fromDecodeError(de *toml.DecodeError, f *tomlpos.Finder) *Error {
	at, key, path := f.Locate(de)
	e := &Error{File: c.file, Line: at.Line, Col: at.Col, Path: path, Err: de}
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	switch {
	case msg == "unknown field":
		msg = unknownMsg(key, false)
	case msg == "missing table":
		msg = unknownMsg(key, true)
	case msg == "cannot store an array table in a struct":
		if i := strings.LastIndexByte(e.Path, '['); i > 0 && strings.HasSuffix(e.Path, "]") {
			e.Path = e.Path[:i]
		}
		msg = fmt.Sprintf("is a single table: write [%s], not [[%s]]", key, key)
	case strings.HasPrefix(msg, "cannot decode TOML table into ") && schemaTypes[tomlpos.Unindexed(e.Path)] == nil:
		// A table where a value belongs (links.x = ...): go-toml names
		// the wrong type, so name the value's key and type instead.
		p := e.Path
		for p != "" && schemaTypes[tomlpos.Unindexed(p)] == nil {
			p = tomlpos.Parent(p)
		}
		if t := schemaTypes[tomlpos.Unindexed(p)]; t != nil {
			e.Path = p
			if at, ok := c.keys.Lookup(p); ok {
				e.Line, e.Col = at.Line, at.Col
			}
			msg = fmt.Sprintf("expected %s, found a table", goTypeName(t.String()))
		} else {
			msg = friendlyMismatch(msg)
		}
	default:
		msg = friendlyMismatch(msg)
	}
	e.Msg = msg
	return e
}

var mismatchRE = regexp.MustCompile(`^cannot decode TOML (.+?) into .*?(?:of )?type (\S+)$`)

// friendlyMismatch rewrites go-toml's Go-flavoured type errors
// ("cannot decode TOML string into struct field site.Config.Version of
// type int") into the operator's terms.
func friendlyMismatch(msg string) string {
	m := mismatchRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	return fmt.Sprintf("expected %s, found %s", goTypeName(m[2]), article(m[1]))
}

func goTypeName(t string) string {
	switch t {
	case "string":
		return "a string"
	case "int":
		return "an integer"
	case "bool":
		return "true or false"
	case "[]string":
		return "an array of strings"
	case "site.FSID":
		return "an integer or a UUID string"
	}
	if strings.HasPrefix(t, "[]") {
		return "an array of tables"
	}
	return "a table"
}

func article(s string) string {
	if s != "" && strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}
