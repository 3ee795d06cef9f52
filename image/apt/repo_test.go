package apt

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ulikunitz/xz"
)

// newKey makes a fast EdDSA signing key; at shifts its creation time.
func newKey(t *testing.T, at time.Time, lifetime uint32) *openpgp.Entity {
	t.Helper()
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, KeyLifetimeSecs: lifetime}
	if !at.IsZero() {
		cfg.Time = func() time.Time { return at }
	}
	e, err := openpgp.NewEntity("tandem test archive", "", "", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// writeKeyring writes e's public key, binary or armored, to a temp file.
func writeKeyring(t *testing.T, e *openpgp.Entity, armored bool) string {
	t.Helper()
	var buf bytes.Buffer
	if armored {
		w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Serialize(w); err != nil {
			t.Fatal(err)
		}
		w.Close()
	} else if err := e.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "keyring.gpg")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func clearsignText(t *testing.T, e *openpgp.Entity, text []byte, at time.Time) []byte {
	t.Helper()
	var cfg *packet.Config
	if !at.IsZero() {
		cfg = &packet.Config{Time: func() time.Time { return at }}
	}
	var out bytes.Buffer
	w, err := clearsign.Encode(&out, e.PrivateKey, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(text)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func xzBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// server serves a map of files and counts requests per path. fail, if
// set, may answer a request instead (for error injection).
type server struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
	fail  func(path string, hit int) (status int, body []byte, failed bool)
	delay time.Duration
	inFly int
	maxIn int
}

func newServer(t *testing.T) *server {
	s := &server{files: map[string][]byte{}, hits: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	s.mu.Lock()
	s.hits[p]++
	hit := s.hits[p]
	s.inFly++
	s.maxIn = max(s.maxIn, s.inFly)
	body, ok := s.files[p]
	fail := s.fail
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFly--
		s.mu.Unlock()
	}()
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-r.Context().Done():
			return
		}
	}
	if fail != nil {
		if code, b, failed := fail(p, hit); failed {
			w.WriteHeader(code)
			w.Write(b)
			return
		}
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(body)
}

func (s *server) count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, c := range s.hits {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}

// repo describes a generated archive suite; publish puts it on a server.
type repo struct {
	suite    string // directory under dists/
	relSuite string // Suite: in Release, default suite
	packages string // Packages text for main/binary-amd64
	exts     []string
	signer   *openpgp.Entity
	signAt   time.Time
	byHash   bool
	tamper   bool // serve a Packages.xz that differs from Release
	forge    bool // edit the signed text after signing
	// validUntil is the Release's Valid-Until line: "" a week from now,
	// "-" none.
	validUntil string
}

func (r repo) publish(t *testing.T, s *server, prefix string) {
	t.Helper()
	if r.relSuite == "" {
		r.relSuite = r.suite
	}
	if r.exts == nil {
		r.exts = []string{".xz"}
	}
	plain := []byte(r.packages)
	dir := "main/binary-amd64/"
	var lines []string
	// Release always lists the plain file, as Debian's does, even when it
	// is not served.
	lines = append(lines, fmt.Sprintf(" %s %d %s", sha(plain), len(plain), dir+"Packages"))
	for _, ext := range r.exts {
		var b []byte
		switch ext {
		case ".xz":
			b = xzBytes(t, plain)
		case ".gz":
			b = gzBytes(plain)
		case "":
			b = plain
		}
		if ext != "" {
			lines = append(lines, fmt.Sprintf(" %s %d %s", sha(b), len(b), dir+"Packages"+ext))
		}
		served := b
		if r.tamper {
			served = bytes.Clone(b)
			served[len(served)/2] ^= 0xff
		}
		s.files[prefix+"dists/"+r.suite+"/"+dir+"Packages"+ext] = served
		if r.byHash {
			s.files[prefix+"dists/"+r.suite+"/"+dir+"by-hash/SHA256/"+sha(b)] = served
		}
	}
	sort.Strings(lines)
	rel := fmt.Sprintf("Origin: Test\nSuite: %s\nCodename: %s\nDate: %s\n", r.relSuite, r.relSuite,
		time.Now().UTC().Add(-time.Hour).Format(time.RFC1123))
	switch r.validUntil {
	case "":
		rel += "Valid-Until: " + time.Now().UTC().Add(7*24*time.Hour).Format(time.RFC1123) + "\n"
	case "-":
	default:
		rel += "Valid-Until: " + r.validUntil + "\n"
	}
	rel += "Architectures: amd64\nComponents: main\n"
	if r.byHash {
		rel += "Acquire-By-Hash: yes\n"
	}
	rel += "SHA256:\n" + strings.Join(lines, "\n") + "\n"
	signed := clearsignText(t, r.signer, []byte(rel), r.signAt)
	if r.forge {
		signed = bytes.Replace(signed, []byte("Origin: Test"), []byte("Origin: Evil"), 1)
	}
	s.files[prefix+"dists/"+r.suite+"/InRelease"] = signed
}

// pkgStanza renders a minimal Packages stanza; extra are "Field: value" lines.
func pkgStanza(name, ver, arch string, extra ...string) string {
	body := []byte(name + ver)
	var b strings.Builder
	fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: %s\n", name, ver, arch)
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	fmt.Fprintf(&b, "Filename: pool/main/%s/%s_%s_%s.deb\nSize: %d\nSHA256: %s\nDescription: test package\n that spans lines\n\n",
		name[:1], name, strings.ReplaceAll(ver, ":", "%3a"), arch, len(body), sha(body))
	return b.String()
}
