package compress

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func TestRoundTrip(t *testing.T) {
	want := bytes.Repeat([]byte("tandem "), 1000)
	enc := map[string]func() []byte{
		"": func() []byte { return want },
		".gz": func() []byte {
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			w.Write(want)
			w.Close()
			return b.Bytes()
		},
		".xz": func() []byte {
			var b bytes.Buffer
			w, _ := xz.NewWriter(&b)
			w.Write(want)
			w.Close()
			return b.Bytes()
		},
		".zst": func() []byte {
			e, _ := zstd.NewWriter(nil)
			return e.EncodeAll(want, nil)
		},
	}
	for ext, f := range enc {
		got, err := Bytes(f(), ext)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q: %d bytes, %v", ext, len(got), err)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct{ ext, want string }{
		{".bz2", `unsupported compression ".bz2"`},
		{".gz", "gzip:"},
		{".xz", "xz:"},
		{".zst", "zst"},
	}
	for _, tt := range tests {
		_, err := Bytes([]byte("definitely not compressed"), tt.ext)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.ext, err, tt.want)
		}
	}
}
