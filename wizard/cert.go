package wizard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files the wizard keeps in its state directory.
const (
	certFile = "wizard.crt"
	keyFile  = "wizard.key"
	idFile   = "head-id"
)

// Identity is a head's wizard identity: a random ID and a self-signed TLS
// certificate, both made at first boot and kept, so that the console's
// fingerprint stays the same across restarts of an unconfigured head.
type Identity struct {
	ID          string
	Cert        tls.Certificate
	Fingerprint []byte // SHA-256 of the certificate (DER)
}

// LoadOrCreateIdentity loads the head's ID and TLS certificate from dir,
// making them first if they are missing. A key without its certificate,
// or one that does not match it (power lost while they were written), is
// made again: nobody can have compared a fingerprint never shown.
func LoadOrCreateIdentity(dir string) (*Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wizard identity: %w", err)
	}
	id, err := loadOrCreateID(dir)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		// Missing, torn or mismatched (power lost between the key and
		// the certificate): make a new pair. Unreadable is another matter.
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("wizard identity: load the TLS certificate: %w", err)
		}
		if cert, err = createCert(dir, id, rand.Reader); err != nil {
			return nil, fmt.Errorf("wizard identity: %w", err)
		}
	}
	fp := sha256.Sum256(cert.Certificate[0])
	return &Identity{ID: id, Cert: cert, Fingerprint: fp[:]}, nil
}

func loadOrCreateID(dir string) (string, error) {
	p := filepath.Join(dir, idFile)
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if validID(id) {
			return id, nil
		}
		// A torn write leaves garbage; the ID only has to be random.
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("wizard identity: %w", err)
	}
	var r [10]byte
	if _, err := io.ReadFull(rand.Reader, r[:]); err != nil {
		return "", fmt.Errorf("wizard identity: %w", err)
	}
	id := hex.EncodeToString(r[:])
	if err := writeFileAtomic(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("wizard identity: %w", err)
	}
	return id, nil
}

// validID accepts what loadOrCreateID writes: lowercase hex, short.
func validID(id string) bool {
	if len(id) < 8 || len(id) > 64 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

// createCert makes an ECDSA P-256 key and a self-signed certificate for
// it. Its validity does not depend on the clock: a head's clock may be
// wrong at first boot, and a certificate "not yet valid" would only
// teach the operator to click through warnings.
func createCert(dir, id string, rnd io.Reader) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rnd, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Tandem head " + id, Organization: []string{"Tandem first-boot setup"}},
		// RFC 5280 4.1.2.5: 99991231235959Z means no well-defined expiry.
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	// The key first: a certificate is only ever loaded with its key.
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFileAtomic(filepath.Join(dir, keyFile), keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(filepath.Join(dir, certFile), certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// FormatFingerprint groups a fingerprint for reading aloud and comparing
// by eye: uppercase hex in groups of four.
func FormatFingerprint(fp []byte) string {
	h := strings.ToUpper(hex.EncodeToString(fp))
	var b strings.Builder
	for i := 0; i < len(h); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(h[i:min(i+4, len(h))])
	}
	return b.String()
}

// ParseFingerprint reads a certificate fingerprint as an operator copies
// it: 64 hex digits, in any case, grouped by spaces or colons as the
// console and browsers show them, optionally after "SHA-256" or
// "sha256:".
func ParseFingerprint(s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	for _, p := range []string{"SHA-256", "SHA256", "sha-256", "sha256"} {
		if rest, ok := strings.CutPrefix(t, p); ok {
			t = strings.TrimLeft(rest, ": ")
			break
		}
	}
	t = strings.NewReplacer(" ", "", ":", "", "\t", "").Replace(t)
	fp, err := hex.DecodeString(t)
	if err != nil || len(fp) != sha256.Size {
		return nil, fmt.Errorf("%q is not a SHA-256 certificate fingerprint (64 hex digits, as the head's console shows it)", s)
	}
	return fp, nil
}

// certFingerprint is the SHA-256 of a certificate's DER.
func certFingerprint(der []byte) []byte {
	fp := sha256.Sum256(der)
	return fp[:]
}

// writeFileAtomic writes a file so that after a power loss it holds
// either the old content or the new, never a part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
