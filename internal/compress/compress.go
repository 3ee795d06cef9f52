// Package compress opens the compressed streams Debian uses (.deb members,
// index files, kernel modules) by their file-name extension, in one place.
package compress

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// NewReader decompresses r according to ext: ".gz", ".xz", ".zst", or ""
// for an uncompressed stream. Close releases decoder resources.
func NewReader(r io.Reader, ext string) (io.ReadCloser, error) {
	switch ext {
	case "":
		return io.NopCloser(r), nil
	case ".gz":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case ".xz":
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(xr), nil
	case ".zst":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("unsupported compression %q", ext)
}

// Bytes decompresses raw according to ext.
func Bytes(raw []byte, ext string) ([]byte, error) {
	if ext == "" {
		return raw, nil
	}
	r, err := NewReader(bytes.NewReader(raw), ext)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	out.Grow(len(raw) * 4) // typical ratio; saves regrowing large indexes
	if _, err := io.Copy(&out, r); err != nil {
		return nil, fmt.Errorf("decompress %s: %w", ext, err)
	}
	return out.Bytes(), nil
}
