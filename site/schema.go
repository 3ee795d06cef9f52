package site

import (
	"reflect"
	"strings"

	"tandem.dev/tandem/internal/tomlpos"
)

// keyKind is what a schema key holds.
type keyKind int

const (
	leaf     keyKind = iota // a value: go-toml type-checks anything below it
	fsidLeaf                // an FSID: go-toml's strict mode would see keys below it
	table                   // a table or array of tables
)

// schema is the set of valid unindexed key paths, derived from Config's
// toml tags so that it cannot drift from the decoder; schemaTypes holds
// each path's Go type, for messages.
var schema, schemaTypes = func() (map[string]keyKind, map[string]reflect.Type) {
	m := map[string]keyKind{}
	types := map[string]reflect.Type{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("toml")
			if tag == "" || tag == "-" {
				continue
			}
			path := tomlpos.Join(prefix, tag)
			types[path] = f.Type
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			switch {
			case ft == reflect.TypeOf(FSID{}):
				m[path] = fsidLeaf
			case ft.Kind() == reflect.Struct:
				m[path] = table
				walk(ft, path)
			default:
				m[path] = leaf
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return m, types
}()

// unknownKeys finds keys that are not in the schema, as go-toml's strict
// mode does, but in linear time: go-toml renders a context for each
// unknown key by splitting the whole document again, which a hostile
// file with many unknown keys turns into minutes of PID 1 time. Keys
// below an unknown key, or below a value (a type error go-toml reports),
// are left out.
func (c *Config) unknownKeys() ValidationErrors {
	var verrs ValidationErrors
	for path, p := range c.keys.All() {
		if strings.HasSuffix(path, "]") {
			continue // an array element; its array is checked itself
		}
		u := tomlpos.Unindexed(path)
		if _, ok := schema[u]; ok {
			continue
		}
		if parent := tomlpos.Parent(u); parent != "" && schema[parent] != table && schema[parent] != fsidLeaf {
			continue
		}
		verrs = append(verrs, &Error{File: c.file, Line: p.Line, Col: p.Col, Path: path, Msg: unknownMsg(u, c.keys.Header(u))})
	}
	verrs.sort()
	return verrs
}

func unknownMsg(path string, header bool) string {
	leaf := path[strings.LastIndex(path, ".")+1:]
	switch {
	case strings.Contains(leaf, "password"):
		// Rejected like any unknown key, but the operator needs to know
		// why and what to write instead.
		return "a password must never be written in the site config (it is kept on disk and shown in support bundles); put it in a root-only file and name that file with join_password_file"
	case header:
		return "unknown table (misspelt, or not part of site config version 1)"
	}
	return "unknown key (misspelt, or not part of site config version 1)"
}
