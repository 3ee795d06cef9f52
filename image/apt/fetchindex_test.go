package apt

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

var testPackages = pkgStanza("hello", "2.10-3", "amd64", "Depends: libc6 (>= 2.34)") +
	pkgStanza("libc6", "2.36-9", "amd64", "Priority: required", "Multi-Arch: same") +
	pkgStanza("tzdata", "2024a-0", "all") +
	pkgStanza("other", "1.0", "i386")

func TestFetchIndex(t *testing.T) {
	good := newKey(t, time.Time{}, 0)
	evil := newKey(t, time.Time{}, 0)
	// Expired since long: snapshot mirrors are signed by such keys.
	old := newKey(t, time.Now().Add(-72*time.Hour), 3600)
	revoked := newKey(t, time.Time{}, 0)
	if err := revoked.RevokeKey(packet.KeyCompromised, "test", nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		repo     repo
		keyring  string // client keyring; default good's
		signedBy string
		wantErr  string
	}{
		{name: "xz", repo: repo{exts: []string{".xz", ".gz"}}},
		{name: "gz only", repo: repo{exts: []string{".gz"}}},
		{name: "plain only", repo: repo{exts: []string{""}}},
		{name: "by-hash", repo: repo{byHash: true}},
		{name: "armored keyring", repo: repo{}, keyring: writeKeyring(t, good, true)},
		{name: "signed-by wins", repo: repo{}, keyring: writeKeyring(t, evil, false), signedBy: writeKeyring(t, good, false)},
		{name: "expired key accepted", repo: repo{signer: old, signAt: time.Now().Add(-71 * time.Hour)}, keyring: writeKeyring(t, old, false)},
		{name: "tampered Packages.xz", repo: repo{tamper: true}, wantErr: "sha256 mismatch"},
		{name: "signed text edited", repo: repo{forge: true}, wantErr: "bad signature"},
		{name: "signed by another key", repo: repo{signer: evil}, wantErr: "bad signature"},
		{name: "revoked key", repo: repo{signer: revoked}, keyring: writeKeyring(t, revoked, false), wantErr: "bad signature"},
		{name: "other suite's Release", repo: repo{relSuite: "trixie"}, wantErr: `is for suite "trixie"`},
		{name: "missing keyring", repo: repo{}, keyring: "/nonexistent/keyring.gpg", wantErr: "keyring"},
	}
	defKeyring := writeKeyring(t, good, false)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t)
			r := tc.repo
			r.suite, r.packages = "bookworm", testPackages
			if r.signer == nil {
				r.signer = good
			}
			r.publish(t, srv, "debian/")
			c := &Client{Keyring: tc.keyring, CacheDir: t.TempDir()}
			if c.Keyring == "" {
				c.Keyring = defKeyring
			}
			src := Source{URI: srv.URL + "/debian", Suite: "bookworm", Components: []string{"main"}, SignedBy: tc.signedBy}
			idx, err := c.FetchIndex(context.Background(), []Source{src})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), srv.URL) {
					t.Errorf("err = %v, want it to name the URL", err)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if idx.Len() != 3 { // i386 package dropped
				t.Errorf("Len = %d, want 3", idx.Len())
			}
			p := idx.Lookup("hello")
			if p == nil || p.Version != "2.10-3" || p.SourceURI != src.URI || p.Depends != "libc6 (>= 2.34)" {
				t.Errorf("hello = %+v", p)
			}
			if idx.Lookup("other") != nil {
				t.Error("i386 package indexed")
			}
		})
	}
}

func TestFetchIndexCache(t *testing.T) {
	key := newKey(t, time.Time{}, 0)
	srv := newServer(t)
	repo{suite: "bookworm", packages: testPackages, signer: key}.publish(t, srv, "")
	c := &Client{Keyring: writeKeyring(t, key, false), CacheDir: t.TempDir()}
	src := Source{URI: srv.URL, Suite: "bookworm", Components: []string{"main"}}
	for run := 1; run <= 2; run++ {
		if _, err := c.FetchIndex(context.Background(), []Source{src}); err != nil {
			t.Fatal(err)
		}
		if got := srv.count("dists/bookworm/InRelease"); got != run {
			t.Errorf("run %d: InRelease fetched %d times, want %d", run, got, run)
		}
		if got := srv.count("dists/bookworm/main/"); got != 1 {
			t.Errorf("run %d: Packages fetched %d times, want 1", run, got)
		}
	}
	// A changed index must be fetched again despite the cache.
	repo{suite: "bookworm", packages: testPackages + pkgStanza("new", "1", "all"), signer: key}.publish(t, srv, "")
	idx, err := c.FetchIndex(context.Background(), []Source{src})
	if err != nil {
		t.Fatal(err)
	}
	if idx.Lookup("new") == nil || srv.count("dists/bookworm/main/") != 2 {
		t.Errorf("changed index not refetched (hits %d)", srv.count("dists/bookworm/main/"))
	}
}

func TestFetchIndexErrors(t *testing.T) {
	key := newKey(t, time.Time{}, 0)
	kr := writeKeyring(t, key, false)
	dead := newServer(t)
	deadURL := dead.URL
	dead.Close()
	tests := []struct {
		name     string
		fail     func(p string, hit int) (int, []byte, bool)
		uri      string
		wantErr  string
		wantHits int // InRelease requests
	}{
		{name: "transient 503 then ok", fail: func(p string, hit int) (int, []byte, bool) {
			return 503, nil, hit == 1
		}, wantHits: 2},
		{name: "persistent 503 gives up after 2 retries", fail: func(p string, hit int) (int, []byte, bool) {
			return 503, nil, true
		}, wantErr: "503", wantHits: 3},
		{name: "404 is not retried", fail: func(p string, hit int) (int, []byte, bool) {
			return 404, nil, true
		}, wantErr: "404", wantHits: 1},
		{name: "unreachable mirror", uri: deadURL, wantErr: deadURL + "/dists/bookworm/InRelease"},
		{name: "garbage InRelease", fail: func(p string, hit int) (int, []byte, bool) {
			return 200, []byte("Suite: bookworm\n"), strings.HasSuffix(p, "InRelease")
		}, wantErr: "not a clearsigned file", wantHits: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t)
			repo{suite: "bookworm", packages: testPackages, signer: key}.publish(t, srv, "")
			srv.fail = tc.fail
			uri := srv.URL
			if tc.uri != "" {
				uri = tc.uri
			}
			c := &Client{Keyring: kr, Backoff: time.Millisecond}
			_, err := c.FetchIndex(context.Background(), []Source{{URI: uri, Suite: "bookworm", Components: []string{"main"}}})
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if tc.uri == "" {
				if got := srv.count("dists/bookworm/InRelease"); got != tc.wantHits {
					t.Errorf("InRelease requested %d times, want %d", got, tc.wantHits)
				}
			}
		})
	}
}

func TestFetchIndexCancel(t *testing.T) {
	srv := newServer(t)
	srv.delay = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := (&Client{}).FetchIndex(ctx, []Source{{URI: srv.URL, Suite: "bookworm", Components: []string{"main"}}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("cancellation was not prompt")
	}
}

// Several sources: the highest version wins, and equal versions keep the
// first source.
func TestFetchIndexMerge(t *testing.T) {
	key := newKey(t, time.Time{}, 0)
	srv := newServer(t)
	repo{suite: "bookworm", packages: pkgStanza("linux-image-amd64", "6.1.90-1", "amd64") + pkgStanza("same", "1", "all"), signer: key}.publish(t, srv, "debian/")
	repo{suite: "bookworm-security", packages: pkgStanza("linux-image-amd64", "6.1.99-1", "amd64") + pkgStanza("same", "1", "all"), signer: key}.publish(t, srv, "security/")
	c := &Client{Keyring: writeKeyring(t, key, false)}
	idx, err := c.FetchIndex(context.Background(), []Source{
		{URI: srv.URL + "/debian", Suite: "bookworm", Components: []string{"main"}},
		{URI: srv.URL + "/security", Suite: "bookworm-security", Components: []string{"main"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := idx.Lookup("linux-image-amd64"); p.Version != "6.1.99-1" || p.Suite != "bookworm-security" {
		t.Errorf("kernel = %s from %s, want the security update", p, p.Suite)
	}
	if p := idx.Lookup("same"); p.Suite != "bookworm" || len(idx.Versions("same")) != 1 {
		t.Errorf("same = %s from %s (%d versions), want bookworm's only", p, p.Suite, len(idx.Versions("same")))
	}
}
