// Package lenprefix feeds values to a hash unambiguously: each one
// length-prefixed, so that no two lists of parts give the same input.
// Cache keys (image/build) and MACs (ha/control) both need this.
package lenprefix

import (
	"encoding/json"
	"fmt"
	"io"
)

// Write writes each part as "<len>:<bytes>": strings and byte slices as
// they are, anything else as its JSON.
func Write(w io.Writer, parts ...any) {
	for _, p := range parts {
		var b []byte
		switch v := p.(type) {
		case string:
			b = []byte(v)
		case []byte:
			b = v
		default:
			b, _ = json.Marshal(v)
		}
		fmt.Fprintf(w, "%d:", len(b))
		w.Write(b)
	}
}
