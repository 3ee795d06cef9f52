package apt

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// debServer serves n fake .deb files and returns their lock entries.
func debServer(t *testing.T, n int) (*server, []Locked) {
	t.Helper()
	srv := newServer(t)
	var pkgs []Locked
	for i := range n {
		body := bytes.Repeat([]byte(fmt.Sprintf("deb %d ", i)), 1000+i)
		name := fmt.Sprintf("pkg%02d", i)
		fn := "pool/main/p/" + name + "/" + name + "_1_amd64.deb"
		srv.files["debian/"+fn] = body
		pkgs = append(pkgs, Locked{Name: name, Version: "1", Arch: "amd64", SHA256: sha(body),
			Size: int64(len(body)), Filename: fn, Suite: "stable", Source: srv.URL + "/debian"})
	}
	return srv, pkgs
}

// A warm build: lock in hand, only .debs are requested, each once.
func TestFetchFromLock(t *testing.T) {
	srv, pkgs := debServer(t, 10)
	srv.delay = 20 * time.Millisecond // lets downloads overlap
	dir := t.TempDir()
	lockFile := filepath.Join(dir, "packages.lock")
	if err := WriteLock(lockFile, &Lock{Arch: "amd64", Roots: []string{"pkg00"}, Packages: pkgs}); err != nil {
		t.Fatal(err)
	}
	lock, err := ReadLock(lockFile)
	if err != nil {
		t.Fatal(err)
	}
	// The lockfile names suites, not mirrors: bind them to this run's server.
	if err := lock.Bind([]Source{{URI: srv.URL + "/debian", Suite: "stable"}}); err != nil {
		t.Fatal(err)
	}
	if err := lock.Bind([]Source{{URI: srv.URL + "/debian", Suite: "oldstable"}}); err == nil || !strings.Contains(err.Error(), "no configured source serves that suite") {
		t.Errorf("Bind without the suite: %v", err)
	}
	var mu sync.Mutex
	var events []Event
	c := &Client{CacheDir: filepath.Join(dir, "cache"), Progress: func(e Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}}
	var total int64
	for _, p := range pkgs {
		total += p.Size
	}
	for run := 1; run <= 2; run++ {
		events = nil
		paths, err := c.Fetch(context.Background(), lock.Packages)
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != len(pkgs) {
			t.Fatalf("run %d: %d paths, want %d", run, len(paths), len(pkgs))
		}
		for _, p := range pkgs {
			b, err := os.ReadFile(paths[p.Name])
			if err != nil || sha(b) != p.SHA256 || paths[p.Name] != filepath.Join(c.CacheDir, "debs", p.SHA256+".deb") {
				t.Errorf("run %d: %s at %s: %v", run, p.Name, paths[p.Name], err)
			}
		}
		// Second run: all cached, nothing downloaded.
		if got := srv.count("debian/pool/"); got != len(pkgs) {
			t.Errorf("run %d: %d .deb requests, want %d in all", run, got, len(pkgs))
		}
		if got := srv.count("debian/dists/"); got != 0 {
			t.Errorf("run %d: %d index requests, want none", run, got)
		}
		if len(events) != len(pkgs) {
			t.Fatalf("run %d: %d events, want %d", run, len(events), len(pkgs))
		}
		for i, e := range events {
			if e.Phase != "fetch" || e.Done != i+1 || e.Total != len(pkgs) || e.TotalBytes != total || e.Bytes > total {
				t.Errorf("run %d: event %d = %+v", run, i, e)
			}
		}
		if last := events[len(events)-1]; last.Bytes != total {
			t.Errorf("run %d: last event bytes %d, want %d", run, last.Bytes, total)
		}
	}
	if srv.maxIn > parallelDebs || srv.maxIn < 2 {
		t.Errorf("max parallel downloads %d, want 2..%d", srv.maxIn, parallelDebs)
	}

	// A corrupted cache entry is detected and fetched again.
	victim := filepath.Join(c.CacheDir, "debs", pkgs[3].SHA256+".deb")
	if err := os.WriteFile(victim, bytes.Repeat([]byte("x"), int(pkgs[3].Size)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(context.Background(), lock.Packages); err != nil {
		t.Fatal(err)
	}
	if got := srv.count("debian/pool/"); got != len(pkgs)+1 {
		t.Errorf("after corruption: %d requests, want %d", got, len(pkgs)+1)
	}
}

func TestFetchErrors(t *testing.T) {
	tests := []struct {
		name     string
		fail     func(p string, hit int) (int, []byte, bool)
		edit     func(l *Locked)
		wantErr  string
		wantHits int
	}{
		{name: "sha mismatch", fail: func(p string, hit int) (int, []byte, bool) {
			return 200, bytes.Repeat([]byte("?"), 6000), true // right size for pkg00
		}, wantErr: "sha256 mismatch", wantHits: 1},
		{name: "too long", fail: func(p string, hit int) (int, []byte, bool) {
			return 200, bytes.Repeat([]byte("?"), 9000), true
		}, wantErr: "size", wantHits: 1},
		{name: "truncated", fail: func(p string, hit int) (int, []byte, bool) {
			return 200, []byte("deb 0 "), true
		}, wantErr: "size", wantHits: 1},
		{name: "404 not retried", fail: func(p string, hit int) (int, []byte, bool) {
			return 404, nil, true
		}, wantErr: "404", wantHits: 1},
		{name: "502 retried twice", fail: func(p string, hit int) (int, []byte, bool) {
			return 502, nil, true
		}, wantErr: "502", wantHits: 3},
		{name: "503 then ok", fail: func(p string, hit int) (int, []byte, bool) {
			return 503, nil, hit <= 2
		}, wantHits: 3},
		{name: "bad lock entry", edit: func(l *Locked) { l.Filename = "../../etc/passwd" }, wantErr: "bad filename"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, pkgs := debServer(t, 1)
			srv.fail = tc.fail
			if tc.edit != nil {
				tc.edit(&pkgs[0])
			}
			c := &Client{CacheDir: t.TempDir(), Backoff: time.Millisecond}
			paths, err := c.Fetch(context.Background(), pkgs)
			if tc.wantErr == "" {
				if err != nil || paths["pkg00"] == "" {
					t.Fatalf("Fetch = %v, %v", paths, err)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "pkg00") {
					t.Errorf("err = %v, want it to name the package", err)
				}
				// Nothing, not even a temp file, may be left in the cache.
				entries, _ := os.ReadDir(filepath.Join(c.CacheDir, "debs"))
				if len(entries) != 0 {
					t.Errorf("cache holds %v after a failed download", entries)
				}
			}
			if got := srv.count("debian/pool/"); got != tc.wantHits {
				t.Errorf("%d requests, want %d", got, tc.wantHits)
			}
		})
	}
}

func TestFetchCancel(t *testing.T) {
	srv, pkgs := debServer(t, 8)
	srv.delay = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	c := &Client{CacheDir: t.TempDir()}
	start := time.Now()
	if _, err := c.Fetch(ctx, pkgs); err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("cancellation was not prompt")
	}
	if got := srv.count("debian/pool/"); got > parallelDebs {
		t.Errorf("%d downloads started after cancellation", got)
	}
}

func TestFetchStall(t *testing.T) {
	old := stallTimeout
	stallTimeout = 50 * time.Millisecond
	defer func() { stallTimeout = old }()
	srv := newServer(t)
	body := bytes.Repeat([]byte("x"), 100)
	stall := make(chan struct{})
	defer close(stall)
	srv.Config.Handler = http200Stalling(body, stall)
	c := &Client{CacheDir: t.TempDir(), Backoff: time.Millisecond}
	_, err := c.Fetch(context.Background(), []Locked{{Name: "slow", Version: "1", Arch: "all", SHA256: sha(body),
		Size: int64(len(body)), Filename: "slow.deb", Suite: "stable", Source: srv.URL}})
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("err = %v, want a stall", err)
	}
}

// http200Stalling sends half of body, then nothing until release closes.
func http200Stalling(body []byte, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
}
