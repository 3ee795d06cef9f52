package lenprefix

import (
	"bytes"
	"testing"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		parts []any
		want  string
	}{
		{[]any{"ab", "c"}, "2:ab1:c"},
		{[]any{"a", "bc"}, "1:a2:bc"}, // same concatenation, other input
		{[]any{[]byte{1, 2}, 7, map[string]int{"k": 1}}, "2:\x01\x021:77:{\"k\":1}"},
		{nil, ""},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		Write(&b, tc.parts...)
		if b.String() != tc.want {
			t.Errorf("Write(%v) = %q, want %q", tc.parts, b.String(), tc.want)
		}
	}
}
