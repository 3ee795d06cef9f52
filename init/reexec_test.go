package pid1

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/status"
)

// What early boot carries across the exec comes back intact, and the boot
// start is re-derived so that "PID 1 start → ready" spans both images.
func TestResumeEnvironRoundTrip(t *testing.T) {
	st := &resumeState{
		StartMono: int64(5 * time.Second), ExecMono: int64(7 * time.Second),
		Cmdline: Cmdline{Raw: "console=ttyS0 tandem.slot=b", Slot: "b", Consoles: []string{"ttyS0"}},
		Slot:    "b", RootDev: "/dev/vda3",
		Manifest: &manifest.Manifest{Version: "v1", Board: "qemu-x86_64", BootModules: []string{"virtio_net"}},
		Steps:    []status.Step{{Name: "mount /proc", OK: true, MS: 1}, {Name: "re-exec", Optional: true}},
	}
	env, err := resumeEnviron([]string{"HOME=/", resumeEnv + "=stale", "TERM=linux"}, st)
	if err != nil {
		t.Fatal(err)
	}
	var raw string
	n := 0
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, resumeEnv+"="); ok {
			raw, n = v, n+1
		}
	}
	if n != 1 || !slices.Contains(env, "HOME=/") || !slices.Contains(env, "TERM=linux") {
		t.Fatalf("environ = %q, want HOME, TERM and one %s", env, resumeEnv)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	got, start, err := decodeResume(raw, now, 9*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(-4 * time.Second); !start.Equal(want) {
		t.Errorf("start = %v, want %v (4 s before now)", start, want)
	}
	if got.Slot != "b" || got.RootDev != "/dev/vda3" || got.Cmdline.Slot != "b" || got.Manifest.Version != "v1" ||
		!slices.Equal(got.Manifest.BootModules, []string{"virtio_net"}) || len(got.Steps) != 2 || got.Steps[0].Name != "mount /proc" {
		t.Errorf("decoded %+v", got)
	}
}

func TestDecodeResumeErrors(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"not json", "{", "decode"},
		{"no manifest", `{"start_mono":1}`, "no manifest"},
		{"start in the future", `{"start_mono":99000000000,"manifest":{}}`, "bad start time"},
		{"no start", `{"manifest":{}}`, "bad start time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeResume(tt.raw, time.Now(), time.Second)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// The persistent log keeps early boot's lines, in order, before the new
// image's own.
func TestPendingLogAcrossExec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resume.json")
	old := newLogRing()
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	old.add(at, "INFO", "mount /proc: ok")
	old.add(at, "WARN", "two\nlines")
	old.dropped = 2
	if err := old.savePending(path); err != nil {
		t.Fatal(err)
	}
	fresh := newLogRing()
	fresh.add(at, "INFO", "re-exec: ok")
	if err := fresh.loadPending(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s left behind (err %v)", path, err)
	}
	dir := t.TempDir()
	if err := fresh.open(dir); err != nil {
		t.Fatal(err)
	}
	fresh.close()
	got, err := os.ReadFile(filepath.Join(dir, ringFile))
	if err != nil {
		t.Fatal(err)
	}
	want := "(2 early lines dropped: memory buffer full)\n" +
		"2030-01-01T00:00:00.000Z INFO mount /proc: ok\n" +
		"2030-01-01T00:00:00.000Z WARN two\nlines\n" +
		"2030-01-01T00:00:00.000Z INFO re-exec: ok\n"
	if string(got) != want {
		t.Errorf("log =\n%s\nwant\n%s", got, want)
	}
}

// A copy that is not the running binary is never executed.
func TestReexecRefusesBadCopy(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "tandem")
	if err := os.WriteFile(short, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	b := testBoot()
	b.out.ring = newLogRing()
	logPath := filepath.Join(dir, "resume.json")
	for _, exe := range []string{short, filepath.Join(dir, "missing")} {
		if err := b.reexecFrom(exe, logPath); err == nil {
			t.Errorf("reexecFrom(%s) = nil, want an error", exe)
		}
	}
	if _, err := os.Stat(logPath); !os.IsNotExist(err) {
		t.Errorf("%s written for a refused exec", logPath)
	}
}
