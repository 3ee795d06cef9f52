package apt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
)

type keyring = openpgp.EntityList

// keyringFor loads the keys that may sign a source: its Signed-By (keyring
// paths, an inline armored key, or fingerprints selecting from the default
// keyring) or else the client's keyring. Loaded files are memoised.
func (c *Client) keyringFor(signedBy string) (keyring, error) {
	signedBy = strings.TrimSpace(signedBy)
	if strings.HasPrefix(signedBy, "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
		kr, err := openpgp.ReadArmoredKeyRing(strings.NewReader(signedBy))
		if err != nil {
			return nil, fmt.Errorf("inline Signed-By key: %w", err)
		}
		return kr, nil
	}
	def := c.Keyring
	if def == "" {
		def = DefaultKeyring
	}
	if signedBy == "" {
		return c.loadKeyring(def)
	}
	var out keyring
	var fprs []string
	for _, f := range strings.FieldsFunc(signedBy, func(r rune) bool { return r == ',' || r == ' ' }) {
		if strings.HasPrefix(f, "/") {
			kr, err := c.loadKeyring(f)
			if err != nil {
				return nil, err
			}
			out = append(out, kr...)
			continue
		}
		fprs = append(fprs, strings.ToUpper(strings.TrimSuffix(f, "!")))
	}
	if len(fprs) > 0 {
		kr, err := c.loadKeyring(def)
		if err != nil {
			return nil, err
		}
		for _, e := range kr {
			if matchesFingerprint(e, fprs) {
				out = append(out, e)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("no key in %s matches Signed-By %s", def, signedBy)
		}
	}
	return out, nil
}

func matchesFingerprint(e *openpgp.Entity, fprs []string) bool {
	ids := []string{strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))}
	for _, sk := range e.Subkeys {
		ids = append(ids, strings.ToUpper(hex.EncodeToString(sk.PublicKey.Fingerprint)))
	}
	for _, f := range fprs {
		for _, id := range ids {
			if f == id {
				return true
			}
		}
	}
	return false
}

func (c *Client) loadKeyring(file string) (keyring, error) {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	if kr, ok := c.keyrings[file]; ok {
		return kr, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	// .gpg keyrings are binary, .asc ones armored: sniff rather than trust
	// the suffix.
	var kr keyring
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) {
		kr, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
	} else {
		kr, err = openpgp.ReadKeyRing(bytes.NewReader(b))
	}
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", file, err)
	}
	if c.keyrings == nil {
		c.keyrings = map[string]keyring{}
	}
	c.keyrings[file] = kr
	return kr, nil
}

// verifyInRelease checks the clearsigned InRelease and returns the signed
// text. Key and signature expiry are ignored: snapshot mirrors serve old
// releases, and the Release's own Valid-Until is what bounds its age
// (checkValidUntil). Revoked keys are still rejected (go-crypto
// checks revocation before expiry).
func verifyInRelease(data []byte, kr keyring) ([]byte, *openpgp.Entity, error) {
	if !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("-----BEGIN PGP SIGNED MESSAGE-----")) {
		return nil, nil, errors.New("not a clearsigned file")
	}
	b, rest := clearsign.Decode(data)
	if b == nil {
		return nil, nil, errors.New("malformed clearsigned file")
	}
	// Text outside the signed block would be unauthenticated.
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, nil, errors.New("data after the signature")
	}
	_, signer, err := openpgp.VerifyDetachedSignature(kr, bytes.NewReader(b.Bytes), b.ArmoredSignature.Body, nil)
	switch {
	case err == nil:
	case errors.Is(err, pgperrors.ErrKeyExpired), errors.Is(err, pgperrors.ErrSignatureExpired):
		// Signature is cryptographically valid; only dates failed.
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return nil, nil, errors.New("bad signature: not signed by any key in the keyring")
	default:
		return nil, nil, fmt.Errorf("bad signature: %w", err)
	}
	return b.Plaintext, signer, nil
}

type fileHash struct {
	sha256 string
	size   int64
}

type release struct {
	suite, codename string
	// validUntil is the Release's Valid-Until, zero if it has none
	// (Debian's stable suite has none; -security and -updates do).
	validUntil time.Time
	byHash     bool
	// separateAll: arch "all" packages have their own binary-all index.
	// Like apt, only when Architectures lists "all" and
	// No-Support-for-Architecture-all is not "Packages".
	separateAll bool
	files       map[string]fileHash // path below dists/<suite>/ → SHA256
}

func parseRelease(text []byte) (*release, error) {
	st, err := parseStanzas(string(text), false)
	if err != nil {
		return nil, err
	}
	if len(st) == 0 {
		return nil, errors.New("empty Release")
	}
	s := st[0]
	r := &release{
		suite:    s.get("Suite"),
		codename: s.get("Codename"),
		byHash:   strings.EqualFold(s.get("Acquire-By-Hash"), "yes"),
		separateAll: slices.Contains(strings.Fields(s.get("Architectures")), "all") &&
			s.get("No-Support-for-Architecture-all") != "Packages",
		files: map[string]fileHash{},
	}
	if v := s.get("Valid-Until"); v != "" {
		t, err := parseReleaseDate(v)
		if err != nil {
			// apt refuses it too: a date it cannot read bounds nothing.
			return nil, fmt.Errorf("bad Valid-Until %q", v)
		}
		r.validUntil = t
	}
	for _, line := range strings.Split(s.get("SHA256"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("bad SHA256 line %q", line)
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad SHA256 line %q: %w", line, err)
		}
		if b, err := hex.DecodeString(f[0]); err != nil || len(b) != 32 {
			return nil, fmt.Errorf("bad SHA256 line %q", line)
		}
		r.files[f[2]] = fileHash{sha256: strings.ToLower(f[0]), size: size}
	}
	if len(r.files) == 0 {
		return nil, errors.New("Release has no SHA256 file list")
	}
	return r, nil
}

// releaseDates are the forms of Date and Valid-Until that archives
// write: RFC 1123 with a zone name or a numeric offset, day of month
// with or without a leading zero.
var releaseDates = []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"}

func parseReleaseDate(v string) (time.Time, error) {
	var err error
	for _, layout := range releaseDates {
		var t time.Time
		if t, err = time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}

// errExpired: the Release's Valid-Until has passed.
var errExpired = errors.New("expired")

// checkValidUntil refuses a Release whose Valid-Until is before now: its
// signature is still good, so only the date stops a mirror (or anyone
// between it and us) from serving an old index whose packages have known
// holes, which `tandem build --update-lock` would then pin.
func (r *release) checkValidUntil(now time.Time) error {
	if r.validUntil.IsZero() || now.Before(r.validUntil) {
		return nil
	}
	return fmt.Errorf("%w: Valid-Until %s is %s ago, so this may be an old index replayed by the mirror; "+
		"use an up-to-date mirror, or, for a snapshot mirror on purpose, check-valid-until=no on the apt source "+
		"(debian.check_valid_until = false in the image spec)",
		errExpired, r.validUntil.UTC().Format(time.RFC1123), ago(now.Sub(r.validUntil)))
}

func ago(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.Round(time.Minute).String()
}
