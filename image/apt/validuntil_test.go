package apt

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A mirror (or anyone between it and the builder) replays an old Release
// that is still validly signed: `tandem build --update-lock` must refuse
// it once its Valid-Until has passed, naming the file and the date, or
// the lock would pin packages with known holes. A snapshot mirror is
// allowed on purpose (check-valid-until=no), as with apt.
func TestFetchIndexValidUntil(t *testing.T) {
	key := newKey(t, time.Time{}, 0)
	kr := writeKeyring(t, key, false)
	tests := []struct {
		name         string
		validUntil   string // the Release's line; "" a week ahead, "-" none
		noValidUntil bool
		now          time.Time // zero: time.Now
		wantErr      []string
	}{
		{name: "fresh", validUntil: ""},
		{name: "no Valid-Until (Debian's stable suite)", validUntil: "-"},
		{name: "replayed old index", validUntil: "Fri, 02 Jan 2015 00:00:00 UTC",
			wantErr: []string{"dists/bookworm/InRelease: expired: Valid-Until Fri, 02 Jan 2015 00:00:00 UTC is ", " days ago", "check-valid-until=no"}},
		{name: "numeric zone", validUntil: "Fri, 2 Jan 2015 00:00:00 +0000",
			wantErr: []string{"expired: Valid-Until Fri, 02 Jan 2015 00:00:00 UTC"}},
		{name: "expired an hour ago", validUntil: "Sat, 10 Jan 2026 12:00:00 UTC", now: time.Date(2026, 1, 10, 13, 0, 0, 0, time.UTC),
			wantErr: []string{"expired: Valid-Until Sat, 10 Jan 2026 12:00:00 UTC is 1h0m0s ago"}},
		{name: "valid for another minute", validUntil: "Sat, 10 Jan 2026 12:00:00 UTC", now: time.Date(2026, 1, 10, 11, 59, 0, 0, time.UTC)},
		{name: "unreadable date fails closed", validUntil: "next Tuesday", wantErr: []string{`bad Valid-Until "next Tuesday"`}},
		{name: "snapshot mirror on purpose", validUntil: "Fri, 02 Jan 2015 00:00:00 UTC", noValidUntil: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t)
			repo{suite: "bookworm", packages: testPackages, signer: key, validUntil: tc.validUntil}.publish(t, srv, "debian/")
			c := &Client{Keyring: kr}
			if !tc.now.IsZero() {
				c.Now = func() time.Time { return tc.now }
			}
			src := Source{URI: srv.URL + "/debian", Suite: "bookworm", Components: []string{"main"}, NoValidUntil: tc.noValidUntil}
			idx, err := c.FetchIndex(context.Background(), []Source{src})
			if len(tc.wantErr) == 0 {
				if err != nil || idx.Lookup("hello") == nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("the index was accepted")
			}
			for _, w := range append(tc.wantErr, srv.URL) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// A build from a lockfile reads no Release at all, so an old locked
// snapshot still builds reproducibly even where its index has expired.
func TestFetchFromLockReadsNoRelease(t *testing.T) {
	srv, pkgs := debServer(t, 2)
	key := newKey(t, time.Time{}, 0)
	repo{suite: "stable", packages: testPackages, signer: key, validUntil: "Fri, 02 Jan 2015 00:00:00 UTC"}.publish(t, srv, "debian/")
	c := &Client{CacheDir: t.TempDir()}
	if _, err := c.Fetch(context.Background(), pkgs); err != nil {
		t.Fatal(err)
	}
	if n := srv.count("debian/dists/"); n != 0 {
		t.Errorf("a locked fetch read the index %d times", n)
	}
}
