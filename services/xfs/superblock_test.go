package xfs

import (
	"bytes"
	"errors"
	"testing"
)

func TestReadSuper(t *testing.T) {
	sb := func(magic, label string) []byte {
		b := make([]byte, 512)
		copy(b, magic)
		copy(b[sbUUID:], []byte{0x72, 0x28, 0x88, 0x6c, 0xc3, 0x88, 0x40, 0xfc, 0x99, 0x7e, 0x22, 0x9b, 0x7b, 0x81, 0x01, 0x16})
		copy(b[sbLabel:], label)
		return b
	}
	for _, c := range []struct {
		name string
		data []byte
		want Info
		err  error
	}{
		{"label", sb("XFSB", "tandem"), Info{UUID: "7228886c-c388-40fc-997e-229b7b810116", Label: "tandem"}, nil},
		{"full-length label", sb("XFSB", "twelve-chars"), Info{UUID: "7228886c-c388-40fc-997e-229b7b810116", Label: "twelve-chars"}, nil},
		{"no label", sb("XFSB", ""), Info{UUID: "7228886c-c388-40fc-997e-229b7b810116"}, nil},
		{"ext4, not xfs", sb("\x00\x00\x00\x00", "tandem"), Info{}, ErrNotXFS},
		{"short device", []byte("XFSB"), Info{}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := readSuper(bytes.NewReader(c.data))
			switch {
			case c.name == "short device":
				if err == nil {
					t.Fatalf("no error on a %d-byte device: %+v", len(c.data), got)
				}
			case !errors.Is(err, c.err) || (c.err == nil) != (err == nil):
				t.Fatalf("err = %v, want %v", err, c.err)
			case got != c.want:
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
