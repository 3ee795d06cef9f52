package pid1

import (
	"slices"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		slot     string
		consoles []string
		debug    bool
		node     string
		wantErr  bool
	}{
		{name: "empty", in: ""},
		{name: "slot a", in: "console=ttyS0 tandem.slot=a", slot: "a", consoles: []string{"ttyS0"}},
		{name: "slot b with newline", in: "tandem.slot=b quiet\n", slot: "b"},
		{name: "bad slot", in: "tandem.slot=c", wantErr: true},
		{name: "bad slot keeps consoles", in: "tandem.slot=c console=ttyS0", consoles: []string{"ttyS0"}, wantErr: true},
		{name: "empty slot", in: "tandem.slot=", wantErr: true},
		{name: "quoted slot", in: `tandem.slot="b"`, slot: "b"},
		{name: "console options and several", in: "console=tty0 console=ttyS0,115200n8", consoles: []string{"tty0", "ttyS0"}},
		{name: "console with /dev", in: "console=/dev/ttyS1", consoles: []string{"ttyS1"}},
		{name: "debug flag", in: "tandem.debug", debug: true},
		{name: "debug=1", in: "tandem.debug=1", debug: true},
		{name: "debug=0", in: "tandem.debug=0"},
		{name: "debug bad", in: "tandem.debug=maybe", wantErr: true},
		{name: "quoted value with space", in: `foo="a b" tandem.slot=b`, slot: "b"},
		{name: "init args ignored", in: "tandem.slot=a -- tandem.slot=b", slot: "a"},
		{name: "similar keys ignored", in: "xtandem.slot=b tandem.slotx=b", slot: ""},
		{name: "node", in: "tandem.slot=a tandem.node=head-b", slot: "a", node: "head-b"},
		{name: "empty node", in: "tandem.node=", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCmdline(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if c.Node != tt.node {
				t.Errorf("node = %q, want %q", c.Node, tt.node)
			}
			if c.Slot != tt.slot || c.Debug != tt.debug || !slices.Equal(c.Consoles, tt.consoles) {
				t.Errorf("got slot %q debug %v consoles %q; want %q %v %q", c.Slot, c.Debug, c.Consoles, tt.slot, tt.debug, tt.consoles)
			}
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b ", []string{"a", "b"}},
		{`x="1 2" y`, []string{`x="1 2"`, "y"}},
		{"a\tb\n", []string{"a", "b"}},
	}
	for _, tt := range tests {
		if got := splitCmdline(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("splitCmdline(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRootLabel(t *testing.T) {
	tests := []struct {
		slot, want string
		wantErr    bool
	}{
		{"a", "tandem-root-a", false},
		{"b", "tandem-root-b", false},
		{"", "tandem-root-a", false},
		{"c", "", true},
	}
	for _, tt := range tests {
		got, err := rootLabel(tt.slot)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("rootLabel(%q) = %q, %v", tt.slot, got, err)
		}
	}
}

func TestExtraConsoles(t *testing.T) {
	tests := []struct {
		name     string
		cmdline  []string
		manifest string
		want     []string
	}{
		{"none", nil, "", nil},
		{"manifest only", nil, "ttyS0", []string{"/dev/ttyS0"}},
		{"already kernel console", []string{"tty0", "ttyS0"}, "ttyS0", nil},
		{"different", []string{"tty0"}, "/dev/ttyS1", []string{"/dev/ttyS1"}},
	}
	for _, tt := range tests {
		if got := extraConsoles(tt.cmdline, tt.manifest); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
