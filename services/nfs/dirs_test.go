package nfs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tandem.dev/tandem/services"
)

// An NFS client with write access below the mountpoint can plant a
// symlink where an export's directory (or a parent of it, or the state
// directory) is to be made. Start must refuse, create nothing through
// the link, and export nothing: exportfs would export the link's target.
func TestStartDoesNotFollowSymlinks(t *testing.T) {
	tests := []struct {
		name   string
		export string                                  // below the mountpoint
		plant  func(t *testing.T, mnt, outside string) // the client's doing
		errHas string                                  // "" Start succeeds
	}{
		{"plain directories", "vm", func(*testing.T, string, string) {}, ""},
		{"existing directory", "vm", func(t *testing.T, mnt, _ string) { must(t, os.MkdirAll(mnt+"/vm", 0o755)) }, ""},
		{"export is a link out of the filesystem", "vm", func(t *testing.T, mnt, outside string) {
			must(t, os.Symlink(outside, mnt+"/vm"))
		}, "/vm is a symbolic link"},
		{"a parent of the export is a link", "a/vm", func(t *testing.T, mnt, outside string) {
			must(t, os.Symlink(outside, mnt+"/a"))
		}, "/a is a symbolic link"},
		{"export is a link into the state directory", "vm", func(t *testing.T, mnt, _ string) {
			must(t, os.MkdirAll(mnt+"/.tandem/nfs", 0o700))
			must(t, os.Symlink(".tandem/nfs", mnt+"/vm"))
		}, "/vm is a symbolic link"},
		{"the state directory is a link", "vm", func(t *testing.T, mnt, outside string) {
			must(t, os.Symlink(outside, mnt+"/.tandem"))
		}, "/.tandem is a symbolic link"},
		{"a state subdirectory is a link", "vm", func(t *testing.T, mnt, outside string) {
			must(t, os.MkdirAll(mnt+"/.tandem/nfs", 0o700))
			must(t, os.Symlink(outside, mnt+"/.tandem/nfs/v4recovery"))
		}, "/v4recovery is a symbolic link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, w := newWorld(t)
			mnt := s.cfg.Mountpoint
			outside := t.TempDir()
			s.cfg.Exports[0].Path = filepath.Join(mnt, tt.export)
			tt.plant(t, mnt, outside)
			err := s.Start(context.Background())
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				if fi, err := os.Lstat(s.cfg.Exports[0].Path); err != nil || !fi.IsDir() {
					t.Errorf("export dir: %v %v", fi, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) || services.KindOf(err) != services.Refused {
				t.Fatalf("Start: %v (kind %v), want Refused containing %q", err, services.KindOf(err), tt.errHas)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("made %v through the link", ents)
			}
			if _, err := os.Stat(s.cfg.ExportsFile); err == nil {
				t.Error("exports file written")
			}
			if len(w.log) != 0 {
				t.Errorf("went on: %v", w.log)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// An export that covers the state directory would let its clients read
// and rewrite the NFSv4 recovery records and statd's monitor list.
func TestConfigRefusesExportOverState(t *testing.T) {
	s, _ := newWorld(t)
	base := s.cfg
	for _, tc := range []struct {
		path, errHas string
	}{
		{base.Mountpoint, "covers the NFS state directory"},
		{base.Mountpoint + "/.tandem", "covers the NFS state directory"},
		{base.StateDir, "covers the NFS state directory"},
		{base.StateDir + "/v4recovery", "covers the NFS state directory"},
		{"/var/lib/nfs", "not below the replicated filesystem"},
		{base.Mountpoint + "/a/../vm", "not a clean path"},
		{base.Mountpoint + "/vm", ""},
		{base.Mountpoint + "/.tandemx", ""},
	} {
		c := base
		c.Exports = []Export{{Path: tc.path, Clients: []string{"*"}, FSID: "1"}}
		_, err := New(c, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		switch {
		case tc.errHas == "" && err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas) || services.KindOf(err) != services.Config):
			t.Errorf("%s: got %v, want a Config error containing %q", tc.path, err, tc.errHas)
		}
	}
}
