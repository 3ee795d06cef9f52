package site

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Value checkers. Each returns an error phrased for the operator; the
// caller adds file:line:col and the key path.

// MinKeyBytes is the shortest pair key accepted: HMAC-SHA256 wants a key
// as long as its output.
const MinKeyBytes = 32

// DecodeKey decodes a pair key: hex if it is all hex digits (even count),
// else base64 (standard or URL alphabet, padded or not). Surrounding
// whitespace is ignored so that key files may end in a newline.
func DecodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty key")
	}
	var key []byte
	if len(s)%2 == 0 && isHex(s) {
		key, _ = hex.DecodeString(s)
	} else {
		var err error
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if key, err = enc.DecodeString(s); err == nil {
				break
			}
		}
		if err != nil {
			return nil, errors.New("not hex or base64")
		}
	}
	if len(key) < MinKeyBytes {
		return nil, fmt.Errorf("decodes to %d bytes; the pair key needs at least %d (generate one with: head -c 32 /dev/urandom | base64)", len(key), MinKeyBytes)
	}
	same := true
	for _, b := range key {
		same = same && b == key[0]
	}
	if same {
		return nil, errors.New("every byte is the same; this is a placeholder, not a key (generate one with: head -c 32 /dev/urandom | base64)")
	}
	return key, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkHostname applies RFC 1123 label rules, lowercase only: DRBD matches
// `on <name>` against uname -n byte for byte.
func checkHostname(s string) error {
	if !hostnameRE.MatchString(s) {
		return fmt.Errorf("%q is not a valid host name (lowercase letters, digits and '-', 1 to 63 characters, no '-' at either end)", s)
	}
	if strings.Trim(s, "0123456789") == "" {
		return fmt.Errorf("%q is all digits, which resolvers take for an address", s)
	}
	return nil
}

var dnsLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if !dnsLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

// checkIfName applies the kernel's rules for interface names.
func checkIfName(s string) error {
	if len(s) > 15 {
		return fmt.Errorf("%q is longer than 15 characters, the kernel's limit for interface names", s)
	}
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/:") {
		return fmt.Errorf("%q is not a valid interface name", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("%q is not a valid interface name", s)
		}
	}
	return nil
}

// checkMAC accepts Ethernet (6 bytes) and IPoIB (20 bytes) addresses and
// returns the canonical lowercase form used for duplicate checks.
func checkMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || (len(hw) != 6 && len(hw) != 20) {
		return "", fmt.Errorf("%q is not a MAC address (6 bytes, or 20 for IPoIB)", s)
	}
	return hw.String(), nil
}

// checkLink accepts an interface name or, if it contains ':' (which
// interface names cannot), a MAC address.
func checkLink(s string) (string, error) {
	if strings.Contains(s, ":") {
		return checkMAC(s)
	}
	return s, checkIfName(s)
}

// checkHostPrefix parses a host address with prefix length (10.0.0.11/24).
func checkHostPrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address with prefix length, e.g. 10.0.0.11/24", s)
	}
	a := p.Addr()
	if err := checkHostAddr(a); err != nil {
		return netip.Prefix{}, err
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("%q has prefix length 0", s)
	}
	// /31 and /32 (and IPv6 /127, /128) have no network or broadcast address.
	if a.Is4() && p.Bits() <= 30 || a.Is6() && p.Bits() <= 126 {
		if a == p.Masked().Addr() {
			return netip.Prefix{}, fmt.Errorf("%s is the network address of %s, not a host address", a, p.Masked())
		}
		if a.Is4() && a == broadcast(p) {
			return netip.Prefix{}, fmt.Errorf("%s is the broadcast address of %s, not a host address", a, p.Masked())
		}
	}
	return p, nil
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= uint32(math.MaxUint32) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func checkHostAddr(a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return fmt.Errorf("%s has an IPv6 zone; give a global address", a)
	case a.Is4In6():
		return fmt.Errorf("%s is IPv4-mapped; write the IPv4 address", a)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast():
		return fmt.Errorf("%s is not a usable host address", a)
	}
	return nil
}

// checkAddr parses a plain host address (gateway, DNS server, target).
func checkAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a, checkHostAddr(a)
}

var (
	kernelDiskRE = regexp.MustCompile(`^(/dev/)?(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme[0-9]+n[0-9]+|mmcblk[0-9]+)(p?[0-9]+)?$`)
	wwnRE        = regexp.MustCompile(`^0x[0-9a-f]{16}([0-9a-f]{16})?$`)
	partRE       = regexp.MustCompile(`-part[0-9]+$`)
)

// checkDisk accepts the stable disk identities init resolves from sysfs
// and returns the form used for duplicate checks. Kernel names are
// refused: they follow probe order, and the wrong disk could be formatted.
func checkDisk(s string) (string, error) {
	switch {
	case kernelDiskRE.MatchString(s):
		return "", fmt.Errorf("%q is a kernel name, and kernel names follow probe order, which can change between boots; name disks by stable identity (by-id/..., serial:..., wwn:0x...)", s)
	case strings.HasPrefix(s, "/dev/disk/by-id/"):
		// One spelling per disk keeps the duplicate check honest.
		return "", fmt.Errorf("%q: write it as %q", s, strings.TrimPrefix(s, "/dev/disk/"))
	case strings.HasPrefix(s, "by-id/"):
		id := strings.TrimPrefix(s, "by-id/")
		if id == "" || strings.ContainsAny(id, "/ \t") || id == "." || id == ".." {
			return "", fmt.Errorf("%q is not a valid by-id name", s)
		}
		if partRE.MatchString(id) {
			return "", fmt.Errorf("%q names a partition; RAID members are whole disks", s)
		}
		return s, nil
	case strings.HasPrefix(s, "serial:"):
		sn := strings.TrimPrefix(s, "serial:")
		if sn == "" || strings.TrimSpace(sn) != sn || !printable(sn) {
			return "", fmt.Errorf("%q is not a valid serial number", s)
		}
		return s, nil
	case strings.HasPrefix(s, "wwn:"):
		w := strings.ToLower(strings.TrimPrefix(s, "wwn:"))
		if !wwnRE.MatchString(w) {
			return "", fmt.Errorf("%q is not a WWN (wwn:0x and 16 or 32 hex digits)", s)
		}
		return "wwn:" + w, nil
	}
	return "", fmt.Errorf("%q is not a stable disk identity; use by-id/..., serial:... or wwn:0x...", s)
}

func printable(s string) bool {
	for _, r := range s {
		if r < ' ' || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}

// checkAbsPath requires an absolute, clean path.
func checkAbsPath(s string) error {
	if !strings.HasPrefix(s, "/") || path.Clean(s) != s || !printable(s) {
		return fmt.Errorf("%q is not an absolute, clean path", s)
	}
	return nil
}

// under reports whether p is dir or below it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

var systemDirs = []string{"/", "/bin", "/boot", "/etc", "/lib", "/run", "/sbin", "/tmp", "/usr", "/var"}

func checkMountpoint(s string) error {
	if err := checkAbsPath(s); err != nil {
		return err
	}
	for _, d := range systemDirs {
		if s == d {
			return fmt.Errorf("%q is a system directory; mount the data elsewhere, e.g. %s", s, DefaultMountpoint)
		}
	}
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		if under(s, d) {
			return fmt.Errorf("%q is inside the kernel's %s", s, d)
		}
	}
	// The root is a read-only squashfs; /srv is where PID 1 can make
	// mount points (a directory of the state partition).
	if s == DataRoot || !under(s, DataRoot) {
		return fmt.Errorf("%q is not below %s, the only place on the read-only root where data mounts can be made, e.g. %s", s, DataRoot, DefaultMountpoint)
	}
	return nil
}

// DataRoot is the writable directory that holds data mounts.
const DataRoot = "/srv"

// parseFSID normalizes an export's fsid: an integer (as TOML or a
// string writes it) in 1..2^32-1, or a UUID.
func parseFSID(raw string) (string, error) {
	if u, ok := normUUID(raw); ok {
		return u, nil
	}
	n, ok := parseInt(raw)
	if !ok {
		return "", fmt.Errorf("%q is neither an integer nor a UUID", raw)
	}
	if n == 0 {
		return "", errors.New("0 marks the NFSv4 pseudo-root; use 1 or more")
	}
	if n < 0 || n > math.MaxUint32 {
		return "", fmt.Errorf("%d is out of range (1 to %d)", n, uint32(math.MaxUint32))
	}
	return strconv.FormatInt(n, 10), nil
}

// parseInt reads integers the way TOML writes them: decimal, 0x, 0o, 0b,
// with '_' separators.
func parseInt(s string) (int64, bool) {
	s = strings.ReplaceAll(s, "_", "")
	neg := false
	if strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		neg = s[0] == '-'
		s = s[1:]
	}
	base := 10
	if len(s) > 2 && s[0] == '0' {
		switch s[1] {
		case 'x':
			base = 16
		case 'o':
			base = 8
		case 'b':
			base = 2
		}
		if base != 10 {
			s = s[2:]
		}
	}
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseInt(s, base, 64)
	if err != nil {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// normUUID accepts 8-4-4-4-12 or 32 plain hex digits, any case.
func normUUID(s string) (string, bool) {
	h := s
	if len(s) == 36 {
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return "", false
		}
		h = strings.ReplaceAll(s, "-", "")
	}
	if len(h) != 32 || !isHex(h) {
		return "", false
	}
	h = strings.ToLower(h)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], true
}

var exportFlags = map[string]bool{
	"rw": true, "ro": true, "sync": true, "secure": true, "insecure": true,
	"wdelay": true, "no_wdelay": true, "hide": true, "nohide": true, "crossmnt": true,
	"subtree_check": true, "no_subtree_check": true, "secure_locks": true, "insecure_locks": true,
	"auth_nlm": true, "no_auth_nlm": true, "root_squash": true, "no_root_squash": true,
	"all_squash": true, "no_all_squash": true, "mp": true, "mountpoint": true,
	"pnfs": true, "no_pnfs": true, "security_label": true,
}

// exportOpposites are option pairs that contradict each other.
var exportOpposites = [][2]string{
	{"rw", "ro"}, {"secure", "insecure"}, {"wdelay", "no_wdelay"}, {"hide", "nohide"},
	{"subtree_check", "no_subtree_check"}, {"secure_locks", "insecure_locks"},
	{"auth_nlm", "no_auth_nlm"}, {"root_squash", "no_root_squash"},
	{"all_squash", "no_all_squash"}, {"pnfs", "no_pnfs"},
}

func checkExportOption(o string) error {
	name, val, hasVal := strings.Cut(o, "=")
	switch {
	case name == "fsid":
		return errors.New("set the id with the export's fsid key, not in options")
	case o == "async":
		return errors.New("async acknowledges writes before they are on disk, so a failover loses them; use sync")
	case !hasVal && exportFlags[o]:
		return nil
	case hasVal && (name == "anonuid" || name == "anongid"):
		if n, err := strconv.ParseUint(val, 10, 32); err != nil || n > math.MaxUint32 {
			return fmt.Errorf("%q: %s takes a numeric id", o, name)
		}
		return nil
	case hasVal && name == "sec":
		for _, f := range strings.Split(val, ":") {
			switch f {
			case "sys", "krb5", "krb5i", "krb5p":
			default:
				return fmt.Errorf("%q: unknown security flavor %q (sys, krb5, krb5i, krb5p)", o, f)
			}
		}
		return nil
	}
	return fmt.Errorf("%q is not a supported export option", o)
}

var clientHostRE = regexp.MustCompile(`^[A-Za-z0-9*?]([A-Za-z0-9*?.-]*[A-Za-z0-9*?])?$`)

// checkClient accepts the exports(5) client forms: *, host (wildcards
// allowed), IP, CIDR, @netgroup.
func checkClient(s string) error {
	switch {
	case strings.ContainsAny(s, "()"):
		return fmt.Errorf("%q: put export options in options, not after the client", s)
	case s == "*":
		return nil
	case strings.HasPrefix(s, "@"):
		if len(s) > 1 && !strings.ContainsAny(s, " \t,") && printable(s) {
			return nil
		}
	case strings.Contains(s, "/"):
		if _, err := netip.ParsePrefix(s); err == nil {
			return nil
		}
		return fmt.Errorf("%q is not a CIDR prefix, e.g. 10.0.0.0/24", s)
	default:
		if _, err := netip.ParseAddr(s); err == nil || clientHostRE.MatchString(s) {
			return nil
		}
	}
	return fmt.Errorf("%q is not an NFS client (host, IP, CIDR, @netgroup or *)", s)
}

var netbiosRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

func checkNetBIOS(s string) error {
	if !netbiosRE.MatchString(s) {
		return fmt.Errorf("%q is not a NetBIOS name (1 to 15 letters, digits, '-', '_' or '.')", s)
	}
	return nil
}

// checkShareName follows Samba's rules for share names.
func checkShareName(s string) error {
	if s == "" || len(s) > 80 || strings.TrimSpace(s) != s || !printable(s) || strings.ContainsAny(s, `\/:*?"<>|[]+=;,%`) {
		return fmt.Errorf("%q is not a valid share name (1 to 80 characters, none of \\/:*?\"<>|[]+=;,%%)", s)
	}
	switch strings.ToLower(s) {
	case "global", "homes", "printers", "ipc$", "print$":
		return fmt.Errorf("%q is reserved by Samba", s)
	}
	return nil
}

var (
	lvmNameRE = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$`)
	lvSizeRE  = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?[kKmMgGtTpPeE]|([1-9][0-9]?|100)%FREE)$`)
	drbdResRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
)

func checkLVMName(s string) error {
	if !lvmNameRE.MatchString(s) || s == "." || s == ".." {
		return fmt.Errorf("%q is not a valid LVM name (letters, digits, +_.-, not starting with '-')", s)
	}
	return nil
}

func checkLVSize(s string) error {
	if !lvSizeRE.MatchString(s) || strings.Trim(s, "0.kKmMgGtTpPeE") == "" {
		return fmt.Errorf("%q is not a size (e.g. 800G, 1.5T) or a share of the free space (e.g. 100%%FREE)", s)
	}
	return nil
}

// checkRange is the common integer range check.
func checkRange(n, lo, hi int, unit, why string) error {
	if n < lo || n > hi {
		msg := fmt.Sprintf("%d%s is out of range (%d to %d%s)", n, unit, lo, hi, unit)
		if why != "" {
			msg += "; " + why
		}
		return errors.New(msg)
	}
	return nil
}
