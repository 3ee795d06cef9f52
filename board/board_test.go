package board

import (
	"strings"
	"testing"
)

func TestBuiltinBoardsLoad(t *testing.T) {
	for _, name := range []string{"qemu-x86_64", "generic-x86_64"} {
		b, err := Load(name)
		if err != nil {
			t.Fatalf("Load(%q): %v", name, err)
		}
		if b.Name != name {
			t.Errorf("board file %s names itself %q", name, b.Name)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"unknown key", "name = \"x\"\nconsole = \"ttyS0\"\nspeed = 3\n", "b.toml:3:1: speed: unknown key"},
		{"no console", "name = \"x\"\n[modules]\ninitramfs = [\"a\"]\n", "b.toml: console: is required"},
		{"empty initramfs", "name = \"x\"\nconsole = \"ttyS0\"\n[modules]\nboot = [\"a\"]\n", "b.toml:3:2: modules.initramfs: is empty"},
		{"lab channel on real board", "name = \"real\"\nconsole = \"ttyS0\"\nlab_channel = \"p\"\n[modules]\ninitramfs = [\"a\"]\n", "b.toml:3:1: lab_channel: is only allowed on qemu-*"},
		{"ipoib without mtu", "name = \"x\"\nconsole = \"ttyS0\"\nipoib = true\n[modules]\ninitramfs = [\"a\"]\n", "b.toml: ipoib_mtu: is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("b.toml", []byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestUnknownBoard(t *testing.T) {
	_, err := Load("pdp11")
	if err == nil || !strings.Contains(err.Error(), `unknown board "pdp11"`) || !strings.Contains(err.Error(), "qemu-x86_64") {
		t.Errorf("got %v", err)
	}
}
