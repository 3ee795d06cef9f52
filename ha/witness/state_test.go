package witness

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A witness whose state file is gone (never created, a rebuilt host, a
// wiped /var/lib) refuses to start, with what to do, and creates
// nothing: started as if new, it would grant the vote to the head its
// lost record kept out.
func TestMissingStateFileRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		wipe func(t *testing.T, path string)
	}{
		{"file deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"directory wiped and made again", func(t *testing.T, path string) {
			if err := os.RemoveAll(filepath.Dir(path)); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vdi-nas.json")
			writeState(t, path, `{"pair":"vdi-nas","writer":""}`)
			clock := newClock()
			cfg := Config{Pair: "vdi-nas", Key: testKey, Quiet: -1, Nodes: []string{nasA, nasB}, StateFile: path, Now: clock.Now, Log: testLog(t)}
			s, err := NewServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			// nas-a writes alone: nas-b's data is outdated.
			d := &driver{t: t, s: s}
			d.do(nasA, opAcquire, false)
			if rep := d.do(nasA, opOutdatePeer, false); !rep.Writer {
				t.Fatalf("outdate peer: %+v", rep)
			}
			tc.wipe(t, path)
			clock.Advance(time.Hour) // nas-a is long dead

			s, err = NewServer(cfg)
			if err == nil {
				d := &driver{t: t, s: s}
				t.Fatalf("started without its state file; nas-b's acquire: %+v", d.do(nasB, opAcquire, false))
			}
			for _, want := range []string{path, "tandem witness --init", "backup"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if _, serr := os.Stat(path); serr == nil {
				t.Errorf("the refused start created %s", path)
			}
		})
	}
}

// --init (InitState) creates the state file once, with no writer; on a
// file that exists, whatever it holds, it refuses and touches nothing.
func TestInitState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vdi-nas.json")
	clock := newClock()
	cfg := Config{Pair: "vdi-nas", Key: testKey, Quiet: -1, StateFile: path, InitState: true, Now: clock.Now, Log: testLog(t)}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("--init on no file: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 || s.Status().Writer != "" || fileWriter(t, path) != "" {
		t.Fatalf("after --init: %v %v, writer %q", st, err, s.Status().Writer)
	}
	d := &driver{t: t, s: s}
	if rep := d.do(nasB, opAcquire, false); rep.Status != Granted {
		t.Errorf("a new witness with no writer denied nas-b: %+v", rep)
	}
	// The file --init made is what a restart without it reads.
	restart := cfg
	restart.InitState = false
	if _, err := NewServer(restart); err != nil {
		t.Errorf("restart after --init: %v", err)
	}

	for name, content := range map[string]string{
		"a writer recorded": `{"pair":"vdi-nas","writer":"nas-a","since":"2029-12-31T23:00:00Z","boot":"ab000000000000000000000000000000"}`,
		"no writer":         `{"pair":"vdi-nas","writer":""}`,
		"empty":             "",
		"another pair":      `{"pair":"other-nas","writer":"x"}`,
	} {
		writeState(t, path, content)
		old := time.Now().Add(-time.Hour).Truncate(time.Second)
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
		_, err := NewServer(cfg)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "only once") {
			t.Errorf("%s: --init on an existing file: %v", name, err)
		}
		b, _ := os.ReadFile(path)
		st, _ := os.Stat(path)
		if !bytes.Equal(b, []byte(content)) || !st.ModTime().Equal(old) {
			t.Errorf("%s: --init changed the file: %q, modified %v", name, b, st.ModTime())
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("files left beside the state file: %v", ents)
	}
	if _, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, InitState: true}); err == nil {
		t.Errorf("--init with no state file to create was accepted")
	}
}
