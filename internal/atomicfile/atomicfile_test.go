package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	tests := []struct {
		data string
		perm os.FileMode
	}{
		{"first", 0o600},
		{"second, longer than the first", 0o644},
		{"", 0o600},
	}
	for _, tc := range tests {
		if err := Write(p, []byte(tc.data), tc.perm); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		st, _ := os.Stat(p)
		if err != nil || string(got) != tc.data || st.Mode().Perm() != tc.perm {
			t.Errorf("after Write(%q, %v): %q %v, %v", tc.data, tc.perm, got, st.Mode().Perm(), err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := Write(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("a missing directory was not an error")
	}
}
