package tomlpos

import (
	"strings"
	"testing"
)

const doc = `name = "x"
[pair]
key = "k"
list = ["a",
  "b"]
[[node]]
name = "a"
[node.mgmt]
addr = "1"
[[node]]
name = "b"
inline = { x = 1, y = [3, 4] }
[[node.disk]]
id = "d0"
`

func TestPositions(t *testing.T) {
	var v map[string]any
	d, err := Decode("s.toml", []byte(doc), &v)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key       string
		line, col int
	}{
		{"name", 1, 1},
		{"pair", 2, 2},
		{"pair.key", 3, 1},
		{"pair.list[1]", 5, 3},
		{"node[0]", 6, 3},
		{"node[0].mgmt.addr", 9, 1},
		{"node[1].name", 11, 1},
		{"node[1].inline.y[1]", 12, 27},
		{"node[1].disk[0].id", 14, 1},
		{"node[1].missing", 10, 3}, // falls back to the enclosing table
	}
	for _, tt := range tests {
		p, ok := d.Pos(tt.key)
		if !ok || p.Line != tt.line || p.Col != tt.col {
			t.Errorf("Pos(%q) = %v %v, want %d:%d", tt.key, p, ok, tt.line, tt.col)
		}
	}
}

type strictT struct {
	Name string `toml:"name"`
	Pair struct {
		Key  string `toml:"key"`
		Size int    `toml:"size"`
	} `toml:"pair"`
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"name = \"a\"\nbogus = 1\n", "s.toml:2:1: bogus: unknown key"},
		{"name = \"a\"\n[pair]\nsize = \"big\"\n", "s.toml:3:"},
		{"name = \"a\nx=1\n", "s.toml:1:"},
		{"[pair]\nkey = 1 2\n", "s.toml:2:"},
	}
	for _, tt := range tests {
		var v strictT
		_, err := Decode("s.toml", []byte(tt.in), &v)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Decode(%q) = %v, want prefix %q", tt.in, err, tt.want)
		}
	}
}

func TestErrorsSorted(t *testing.T) {
	var v map[string]any
	d, _ := Decode("s.toml", []byte(doc), &v)
	es := Errors{d.Errorf("node[1].name", "second"), d.Errorf("pair.key", "first")}
	got := es.Err().Error()
	want := "s.toml:3:1: pair.key: first\ns.toml:11:1: node[1].name: second"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if (Errors{}).Err() != nil {
		t.Error("empty Errors must be a nil error")
	}
}
