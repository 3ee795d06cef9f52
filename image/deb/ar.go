package deb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const (
	arMagic     = "!<arch>\n"
	arHeaderLen = 60
)

// arReader reads the members of a common-format ar archive, the container
// of a .deb. Debian only uses short names, so GNU/BSD long-name tables are
// not supported.
type arReader struct {
	r         *bufio.Reader
	remaining int64 // unread bytes of the current member
	pad       bool  // member data is padded to an even length
}

func newArReader(r io.Reader) (*arReader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<20)
	}
	magic := make([]byte, len(arMagic))
	if _, err := io.ReadFull(br, magic); err != nil {
		return nil, fmt.Errorf("read ar magic: %w", err)
	}
	if string(magic) != arMagic {
		return nil, errors.New("not an ar archive (bad magic)")
	}
	return &arReader{r: br}, nil
}

// Next skips what is left of the current member and returns the next
// member's name and size, or io.EOF at the end of the archive.
func (a *arReader) Next() (string, int64, error) {
	skip := a.remaining
	if a.pad {
		skip++
	}
	if _, err := a.r.Discard(int(skip)); err != nil {
		return "", 0, fmt.Errorf("skip ar member: %w", err)
	}
	a.remaining, a.pad = 0, false

	var hdr [arHeaderLen]byte
	n, err := io.ReadFull(a.r, hdr[:])
	if err == io.EOF {
		return "", 0, io.EOF
	}
	if err != nil {
		return "", 0, fmt.Errorf("read ar header (%d bytes): %w", n, err)
	}
	if string(hdr[58:60]) != "`\n" {
		return "", 0, errors.New("corrupt ar header (bad terminator)")
	}
	// GNU ar terminates names with '/'; Debian's ar does not.
	name := strings.TrimSuffix(strings.TrimRight(string(hdr[0:16]), " "), "/")
	size, err := strconv.ParseInt(strings.TrimRight(string(hdr[48:58]), " "), 10, 64)
	if err != nil || size < 0 {
		return "", 0, fmt.Errorf("ar member %q: bad size %q", name, hdr[48:58])
	}
	a.remaining, a.pad = size, size%2 == 1
	return name, size, nil
}

// Read reads from the current member.
func (a *arReader) Read(p []byte) (int, error) {
	if a.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > a.remaining {
		p = p[:a.remaining]
	}
	n, err := a.r.Read(p)
	a.remaining -= int64(n)
	if err == io.EOF && a.remaining > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
