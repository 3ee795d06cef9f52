package wizard

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestIdentityPersists: the certificate and ID are made once and kept;
// a missing or torn pair is made again.
func TestIdentityPersists(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != again.ID || !bytes.Equal(first.Fingerprint, again.Fingerprint) {
		t.Fatalf("a second start made a new identity: %s %x, then %s %x", first.ID, first.Fingerprint, again.ID, again.Fingerprint)
	}
	cert, err := x509.ParseCertificate(first.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if cert.PublicKeyAlgorithm != x509.ECDSA || !cert.NotAfter.After(time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC)) || cert.NotBefore.Year() > 2000 {
		t.Errorf("certificate: %v, valid %v to %v", cert.PublicKeyAlgorithm, cert.NotBefore, cert.NotAfter)
	}
	if fi, err := os.Stat(filepath.Join(dir, keyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v", fi.Mode(), err)
	}

	// Power lost between the key and the certificate: the key was
	// replaced, the certificate not. A new pair, same ID.
	other := t.TempDir()
	if _, err := LoadOrCreateIdentity(other); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(other, keyFile))
	os.WriteFile(filepath.Join(dir, keyFile), key, 0o600)
	torn, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if torn.ID != first.ID || bytes.Equal(torn.Fingerprint, first.Fingerprint) {
		t.Errorf("torn pair: ID %s (want %s), fingerprint unchanged %v", torn.ID, first.ID, bytes.Equal(torn.Fingerprint, first.Fingerprint))
	}
	os.Remove(filepath.Join(dir, certFile))
	if n, err := LoadOrCreateIdentity(dir); err != nil || bytes.Equal(n.Fingerprint, torn.Fingerprint) {
		t.Errorf("missing certificate: %v, same fingerprint %v", err, err == nil && bytes.Equal(n.Fingerprint, torn.Fingerprint))
	}
}

func TestFormatFingerprint(t *testing.T) {
	fp := make([]byte, 32)
	for i := range fp {
		fp[i] = byte(i * 7)
	}
	got := FormatFingerprint(fp)
	if !regexp.MustCompile(`^([0-9A-F]{4} ){15}[0-9A-F]{4}$`).MatchString(got) || got[:9] != "0007 0E15" {
		t.Errorf("FormatFingerprint = %q", got)
	}
	c := Console{State: "not configured", URL: "https://10.0.0.11/", Code: "1234 5678", Fingerprint: got}
	lines := c.Lines()
	if len(lines) != 5 || len(lines[3]) < 40 || lines[4][len(lines[4])-4:] != got[len(got)-4:] {
		t.Errorf("console lines:\n%q", lines)
	}
}

func TestParseFingerprint(t *testing.T) {
	fp := make([]byte, 32)
	for i := range fp {
		fp[i] = byte(i*7 + 1)
	}
	shown := FormatFingerprint(fp)
	colons := strings.ReplaceAll(strings.ToLower(hexColons(fp)), " ", "")
	tests := []struct {
		in string
		ok bool
	}{
		{shown, true},
		{"SHA-256 " + shown, true},
		{"sha256:" + strings.ReplaceAll(shown, " ", ""), true},
		{colons, true},
		{"  " + strings.ToLower(shown) + "\n", true},
		{shown[:len(shown)-1], false}, // a digit short
		{shown + "0", false},          // a digit too many
		{strings.Replace(shown, "0", "G", 1), false},
		{"", false},
	}
	for _, tc := range tests {
		got, err := ParseFingerprint(tc.in)
		if tc.ok != (err == nil) || (tc.ok && !bytes.Equal(got, fp)) {
			t.Errorf("ParseFingerprint(%q) = %x, %v; want ok %v", tc.in, got, err, tc.ok)
		}
	}
}

func hexColons(b []byte) string {
	var parts []string
	for _, x := range b {
		parts = append(parts, fmt.Sprintf("%02X", x))
	}
	return strings.Join(parts, ":")
}
