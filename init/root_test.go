package pid1

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseUevent(t *testing.T) {
	u := parseUevent("MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=tandem-root-a\n")
	if u["DEVNAME"] != "vda2" || u["PARTNAME"] != "tandem-root-a" || u["MAJOR"] != "254" {
		t.Errorf("got %v", u)
	}
}

func TestFindPartition(t *testing.T) {
	sys := t.TempDir()
	for name, uevent := range map[string]string{
		"vda":  "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda1": "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTNAME=esp\n",
		"vda2": "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTNAME=tandem-root-a\n",
		"vda3": "MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nPARTNAME=tandem-root-b\n",
		"sda1": "MAJOR=8\nMINOR=1\nDEVNAME=sda1\nDEVTYPE=partition\nPARTNAME=tandem-root-b\n",
	} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		os.WriteFile(filepath.Join(sys, name, "uevent"), []byte(uevent), 0o644)
	}
	devs, err := scanBlock(sys)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		label string
		want  []string
	}{
		{"tandem-root-a", []string{"vda2"}},
		{"tandem-root-b", []string{"sda1", "vda3"}},
		{"tandem-state", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, d := range findPartition(devs, tt.label) {
			got = append(got, d.Name)
		}
		if len(got) != len(tt.want) || (len(got) > 0 && (got[0] != tt.want[0] || got[len(got)-1] != tt.want[len(tt.want)-1])) {
			t.Errorf("%s: got %v, want %v", tt.label, got, tt.want)
		}
	}
}

func TestFreeDir(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a/b/c", "d"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "a/b/c/f"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "g"), []byte("x"), 0o644)
	os.Symlink("/", filepath.Join(dir, "a/root")) // must not be followed
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if n := freeDir(int(f.Fd()), st.Dev); n != 7 {
		t.Errorf("freed %d entries, want 7", n)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
}
