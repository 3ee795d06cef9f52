package spec

import (
	"strings"
	"testing"

	"tandem.dev/tandem/configs"
)

func TestDefaultSpecParses(t *testing.T) {
	s, err := Parse(configs.ImageSpecName, configs.ImageSpec)
	if err != nil {
		t.Fatal(err)
	}
	if s.Board != "qemu-x86_64" || s.Debian.Suite == "" || s.Disk.Size != 2<<30 {
		t.Errorf("unexpected default spec: %+v", s)
	}
	for _, want := range []string{"drbd-utils", "mdadm", "lvm2", "xfsprogs", "e2fsprogs", "nfs-kernel-server", "samba", "winbind"} {
		found := false
		for _, p := range s.PackageNames() {
			found = found || p == want
		}
		if !found {
			t.Errorf("default spec lacks %s", want)
		}
	}
}

const base = `name = "t"
board = "qemu-x86_64"
[debian]
suite = "bookworm"
[kernel]
package = "linux-image-amd64"
[packages]
install = ["mdadm"]
`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"syntax", "name = \"t\n", "s.toml:1:10: basic strings cannot have new lines"},
		{"unknown key", base + "colour = 1\n", "s.toml:9:1: packages.colour: unknown key"},
		{"unknown table key", strings.Replace(base, "[debian]\n", "[debian]\nmirrors = []\n", 1), "s.toml:4:1: debian.mirrors: unknown key"},
		{"wrong type", strings.Replace(base, `name = "t"`, "name = 3", 1), "s.toml:1:8: name:"},
		{"bad size", base + "[disk]\nsize = \"big\"\n", "s.toml:10:8: disk.size:"},
		{"unknown board", strings.Replace(base, "qemu-x86_64", "pdp11", 1), `s.toml:2:1: board: unknown board "pdp11"`},
		{"missing board", strings.Replace(base, "board = \"qemu-x86_64\"\n", "", 1), "s.toml: board: is required"},
		{"missing suite", strings.Replace(base, "suite = \"bookworm\"\n", "", 1), "s.toml:3:2: debian.suite: is required"},
		{"bad arch", strings.Replace(base, "[debian]\n", "[debian]\narch = \"arm64\"\n", 1), `s.toml:4:1: debian.arch: "arm64": only amd64`},
		{"bad mirror", strings.Replace(base, "[debian]\n", "[debian]\nmirror = \"ftp.x\"\n", 1), `debian.mirror: "ftp.x": must be an http://`},
		{"no kernel", strings.Replace(base, "package = \"linux-image-amd64\"\n", "", 1), "s.toml:5:2: kernel.package: is required"},
		{"empty install", strings.Replace(base, `install = ["mdadm"]`, "install = []", 1), "s.toml:8:1: packages.install: is empty"},
		{"bad package name", strings.Replace(base, `"mdadm"`, `"Md Adm"`, 1), `s.toml:8:12: packages.install[0]: "Md Adm" is not a Debian package name`},
		{"twice", strings.Replace(base, `"mdadm"`, `"mdadm", "mdadm (>= 4)"`, 1), `s.toml:8:21: packages.install[1]: "mdadm" is listed twice`},
		{"exclude without reason", base + "[[packages.exclude]]\nname = \"python3\"\n", "s.toml:9:3: packages.exclude[0].reason: say why"},
		{"exclude installed", base + "[[packages.exclude]]\nname = \"mdadm\"\nreason = \"x\"\n", `s.toml:10:1: packages.exclude[0].name: "mdadm" is both installed and excluded`},
		{"tiny disk", base + "[disk]\nsize = \"256MiB\"\n", "s.toml:10:1: disk.size: 256MiB is too small"},
		{"tiny esp", base + "[disk]\nesp = \"1MiB\"\n", "s.toml:10:1: disk.esp: 1MiB is too small"},
		{"unaligned", base + "[disk]\nroot = \"100000000\"\n", "disk.root: 100000000B is not a whole number of MiB"},
		{"bad hostname", base + "[rootfs]\nhostname = \"Bad_Host\"\n", `s.toml:10:1: rootfs.hostname: "Bad_Host" is not a valid host name`},
		{"user without group", base + "[[rootfs.user]]\nname = \"u\"\nuid = 5\ngid = 9\n", "s.toml:12:1: rootfs.user[0].gid: gid 9 has no [[rootfs.group]]"},
		{"relative dir", base + "[[rootfs.dir]]\npath = \"var/x\"\n", `s.toml:10:1: rootfs.dir[0].path: "var/x" must be a clean absolute path`},
		{"bad mode", base + "[[rootfs.dir]]\npath = \"/x\"\nmode = \"rwx\"\n", `s.toml:11:1: rootfs.dir[0].mode: "rwx": write the mode in octal`},
		{"symlink twice", base + "[[rootfs.symlink]]\npath = \"/a\"\ntarget = \"b\"\n[[rootfs.symlink]]\npath = \"/a\"\ntarget = \"c\"\n", `s.toml:13:1: rootfs.symlink[1].path: "/a" is declared twice`},
		{"old epoch", base + "source_date_epoch = 5\n", "packages.source_date_epoch: unknown key"},
		{"old epoch top", "source_date_epoch = 5\n" + base, "s.toml:1:1: source_date_epoch: must be 1980 or later"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("s.toml", []byte(tt.in))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got  %v\nwant %q", err, tt.want)
			}
		})
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"2GiB", 2 << 30, true}, {"512MiB", 512 << 20, true}, {"4096", 4096, true},
		{"1 KiB", 1024, true}, {"2GB", 0, false}, {"-1MiB", 0, false}, {"99999999999TiB", 0, false},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalText([]byte(tt.in))
		if (err == nil) != tt.ok || (tt.ok && s != tt.want) {
			t.Errorf("Size(%q) = %d, %v; want %d ok=%v", tt.in, s, err, tt.want, tt.ok)
		}
	}
}

// The index's Valid-Until is checked unless the spec turns it off.
func TestCheckValidUntil(t *testing.T) {
	for text, want := range map[string]bool{
		base: true,
		strings.Replace(base, "[debian]\n", "[debian]\ncheck_valid_until = true\n", 1):  true,
		strings.Replace(base, "[debian]\n", "[debian]\ncheck_valid_until = false\n", 1): false,
	} {
		s, err := Parse("t.toml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Debian.ValidUntilChecked(); got != want {
			t.Errorf("%q: checked = %v, want %v", text, got, want)
		}
	}
}
