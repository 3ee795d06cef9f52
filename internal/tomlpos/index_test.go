package tomlpos

import (
	"fmt"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	ix, ok := IndexKeys([]byte(doc))
	if !ok {
		t.Fatal("doc did not parse")
	}
	tests := []struct {
		key       string
		line, col int
		ok        bool
	}{
		{"node", 6, 3, true}, // an array of tables is at its first header
		{"node[1]", 10, 3, true},
		{"node[0].mgmt", 8, 2, true},
		{"node[1].inline", 12, 1, true},
		{"node[1].inline.x", 12, 12, true},
		{"node[1].missing", 10, 3, false},
		{"pair.list[7]", 4, 1, false},
		{"nothing.here", 0, 0, false},
	}
	for _, tt := range tests {
		p, ok := ix.Lookup(tt.key)
		if p != (Position{tt.line, tt.col}) || ok != tt.ok {
			t.Errorf("Lookup(%q) = %v %v, want %d:%d %v", tt.key, p, ok, tt.line, tt.col, tt.ok)
		}
	}
	if !ix.Has("node[1].disk[0].id") || ix.Has("node[1].missing") {
		t.Error("Has is wrong")
	}
	if !ix.Header("node[1].disk") || !ix.Header("pair") || ix.Header("pair.key") {
		t.Error("Header is wrong")
	}
	var nilIx *Index
	if _, ok := nilIx.Lookup("a"); ok || nilIx.Has("a") || nilIx.Header("a") {
		t.Error("a nil Index is not empty")
	}
}

func TestIndexBroken(t *testing.T) {
	ix, ok := IndexKeys([]byte("a = 1\nb = \nc = 3\n"))
	if ok || !ix.Has("a") || ix.Has("c") {
		t.Errorf("broken document: ok=%v, a=%v, c=%v", ok, ix.Has("a"), ix.Has("c"))
	}
}

func TestPaths(t *testing.T) {
	quoted := Join(Join("a", "x.y[0]"), "b")
	tests := []struct{ path, parent, unindexed string }{
		{"node[1].name", "node[1]", "node.name"},
		{"node[1]", "node", "node"},
		{"a[0][2]", "a[0]", "a"},
		{"top", "", "top"},
		{quoted, `a."x.y[0]"`, quoted},
		{`a."q\"[1]"[3]`, `a."q\"[1]"`, `a."q\"[1]"`},
	}
	for _, tt := range tests {
		if got := Parent(tt.path); got != tt.parent {
			t.Errorf("Parent(%s) = %s, want %s", tt.path, got, tt.parent)
		}
		if got := Unindexed(tt.path); got != tt.unindexed {
			t.Errorf("Unindexed(%s) = %s, want %s", tt.path, got, tt.unindexed)
		}
	}
	if got := Join("", ""); got != `""` {
		t.Errorf(`Join("", "") = %s`, got)
	}
}

type nodesT struct {
	Node []struct {
		Name string `toml:"name"`
	} `toml:"node"`
}

// go-toml names keys without array indexes; Decode names the element.
func TestDecodeIndexedKey(t *testing.T) {
	in := "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\nbogus = 1\n"
	var v nodesT
	_, err := Decode("s.toml", []byte(in), &v)
	if want := "s.toml:5:1: node[1].bogus: unknown key"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func bigDoc(n int) []byte {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[[t]]\nk%d = [%d, { x = %d }]\n", i, i, i)
	}
	return []byte(b.String())
}

// A big document indexes correctly to its last key. (Speed is measured by
// BenchmarkIndexKeys: Shape-per-key indexing once took minutes here.)
func TestIndexBigDocument(t *testing.T) {
	ix, ok := IndexKeys(bigDoc(100000))
	if !ok || !ix.Has("t[99999].k99999[1].x") {
		t.Fatal("big document not indexed")
	}
	if p, _ := ix.Lookup("t[99999].k99999[1].x"); p != (Position{200000, 20}) {
		t.Errorf("last key at %v", p)
	}
	f := ix.Finder()
	if path, _ := f.Nearest("t.k5", Position{12, 1}); path != "t[5].k5" {
		t.Errorf("Nearest = %q", path)
	}
}

func BenchmarkIndexKeys(b *testing.B) {
	doc := bigDoc(10000)
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		IndexKeys(doc)
	}
}
