package supervisor

import (
	"os"
	"path/filepath"
	"testing"
)

func TestModeFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string // "" leaves the file absent
		want    operatorMode
		wantErr bool
	}{
		{"absent: normal", "", operatorMode{}, false},
		{"standby", `{"standby":true}`, operatorMode{Standby: true}, false},
		{"both", `{"maintenance":true,"standby":true}`, operatorMode{Maintenance: true, Standby: true}, false},
		{"damaged: normal, with an error", `{"maint`, operatorMode{}, true},
	}
	for i, tc := range tests {
		path := filepath.Join(dir, "ha", tc.name, "mode.json")
		if tc.content != "" {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := readMode(path)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%d %s: %+v, %v", i, tc.name, got, err)
		}
		// What is written reads back.
		if err := writeMode(path, tc.want); err != nil {
			t.Fatal(err)
		}
		if back, err := readMode(path); err != nil || back != tc.want {
			t.Errorf("%s: wrote %+v, read %+v, %v", tc.name, tc.want, back, err)
		}
	}
}
