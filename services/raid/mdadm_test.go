package raid

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/internal/hosttool"
	"tandem.dev/tandem/services"
)

// TestClassify maps mdadm 4.x stderr, as printed (format strings from
// Assemble.c, Create.c, Manage.c, util.c and captured runs), to sentinels.
func TestClassify(t *testing.T) {
	tests := []struct {
		stderr string
		want   error
	}{
		// captured on a host without md (mdadm 4.2, Debian 4.2-5)
		{"mdadm: No md superblock detected on /dev/vdb.\n", ErrNoSuperblock},
		{"mdadm: no recogniseable superblock on /dev/loop0\nmdadm: /dev/loop0 has no superblock - assembly aborted\n", ErrNoSuperblock},
		{"mdadm: unexpected failure opening /dev/md127\n", ErrNoKernelMD},
		{"mdadm: cannot open /dev/nonexist: No such file or directory\n", services.ErrNotFound},
		{"mdadm: error opening /dev/md/tandem: No such device or address\n", services.ErrNotFound},
		{"mdadm: No arrays found in config file or automatically\n", services.ErrNotFound},
		// from the format strings
		{"mdadm: /dev/md/tandem assembled from 2 drives - not enough to start the array.\n", ErrNotEnough},
		{"mdadm: /dev/md/tandem assembled from 3 drives - not enough to start the array while not clean - consider --force.\n", ErrNeedsForce},
		{"mdadm: /dev/md/tandem is already in use.\n", ErrActive},
		{"mdadm: Found some drive for an array that is already active: /dev/md/tandem\nmdadm: giving up.\n", ErrActive},
		{"mdadm: /dev/md127 already active, cannot restart it!\n", ErrActive},
		{"mdadm: Cannot get exclusive access to /dev/md127:Perhaps a running process, mounted filesystem or active volume group?\n", services.ErrInUse},
		{"mdadm: /dev/vdb is busy - skipping\n", services.ErrInUse},
		{"mdadm: super1.x cannot open /dev/vdb: Device or resource busy\n", services.ErrInUse},
		{"mdadm: failed to completely stop /dev/md127: Device is busy\n", services.ErrInUse},
		{"mdadm: /dev/vdb appears to be part of a raid array:\n       level=raid10 devices=4 ctime=Thu Jan  1 00:00:00 2026\nContinue creating array? mdadm: create aborted.\n", services.ErrHasData},
		{"mdadm: partition table exists on /dev/vdb\nContinue creating array? mdadm: create aborted.\n", services.ErrHasData},
		{"mdadm: /dev/vdc has wrong uuid.\n", ErrWrongUUID},
		{"mdadm: /dev/md/tandem does not appear to be an md device\n", services.ErrNotFound},
		{"mdadm: something new\n", services.ErrToolFailed},
		{"", services.ErrToolFailed},
	}
	for _, tt := range tests {
		if got := classify(tt.stderr); got != tt.want {
			t.Errorf("classify(%q) = %v, want %v", tt.stderr, got, tt.want)
		}
	}
}

func TestExecErrorMessage(t *testing.T) {
	e := execError([]string{"--stop", "/dev/md/tandem"}, 1,
		"mdadm: Cannot get exclusive access to /dev/md127:Perhaps a running process, mounted filesystem or active volume group?\n", services.ErrInUse)
	want := "mdadm --stop /dev/md/tandem: in use: Cannot get exclusive access to /dev/md127:Perhaps a running process, mounted filesystem or active volume group?"
	if e.Error() != want || !errors.Is(e, services.ErrInUse) {
		t.Errorf("got %q", e.Error())
	}
	e = execError([]string{"--stop"}, 3, "", services.ErrToolFailed)
	if !strings.Contains(e.Error(), "exit status 3") {
		t.Errorf("got %q", e.Error())
	}
}

func TestCreateArgs(t *testing.T) {
	s := CreateSpec{Array: "/dev/md/tandem", Name: "tandem", Homehost: "head-a", ChunkKiB: 512,
		Members: []string{"/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"}}
	want := "--create /dev/md/tandem --config=none --level=10 --layout=n2 --raid-devices=4 --chunk=512 --metadata=1.2 --bitmap=internal --homehost=head-a --name=tandem /dev/vdb /dev/vdc /dev/vdd /dev/vde"
	if got := strings.Join(s.Args(), " "); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	for _, a := range s.Args() {
		if a == "--run" || a == "--force" || a == "--assume-clean" {
			t.Errorf("create must not pass %s", a)
		}
	}
}

func TestParseExport(t *testing.T) {
	// mdadm --examine --export of a v1.2 member
	out := `MD_LEVEL=raid10
MD_DEVICES=4
MD_NAME=head-a:tandem
MD_ARRAY_SIZE=2.14GB
MD_UUID=3a7c1d0e:5b2f0a9c:1e2d3c4b:5a697887
MD_UPDATE_TIME=1767225600
MD_DEV_UUID=0b1c2d3e:4f5a6b7c:8d9e0f1a:2b3c4d5e
MD_EVENTS=19
`
	kv := parseExport(out)
	if kv["MD_UUID"] != "3a7c1d0e:5b2f0a9c:1e2d3c4b:5a697887" || kv["MD_NAME"] != "head-a:tandem" || len(kv) != 8 {
		t.Errorf("got %v", kv)
	}
}

// script writes an executable shell script.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMdadmRun(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		body    string
		timeout time.Duration
		check   func(t *testing.T, m *Mdadm)
	}{
		{name: "examine", body: `echo "$*" > ` + dir + `/args
cat <<EOF
MD_LEVEL=raid10
MD_DEVICES=4
MD_NAME=head-a:tandem
MD_UUID=3a7c1d0e:5b2f0a9c:1e2d3c4b:5a697887
MD_DEV_UUID=0b1c2d3e:4f5a6b7c:8d9e0f1a:2b3c4d5e
MD_EVENTS=19
EOF
`, check: func(t *testing.T, m *Mdadm) {
			sb, err := m.Examine(context.Background(), "/dev/vdb")
			if err != nil {
				t.Fatal(err)
			}
			want := Superblock{UUID: "3a7c1d0e:5b2f0a9c:1e2d3c4b:5a697887", Name: "head-a:tandem", Level: "raid10", Devices: 4, Events: 19, DevUUID: "0b1c2d3e:4f5a6b7c:8d9e0f1a:2b3c4d5e"}
			if sb != want {
				t.Errorf("got %+v", sb)
			}
			if b, _ := os.ReadFile(dir + "/args"); string(b) != "--examine --export --config=none /dev/vdb\n" {
				t.Errorf("args %q", b)
			}
		}},
		{name: "no superblock", body: `echo "mdadm: No md superblock detected on $4." >&2; exit 1`, check: func(t *testing.T, m *Mdadm) {
			_, err := m.Examine(context.Background(), "/dev/vdb")
			if !errors.Is(err, ErrNoSuperblock) || !strings.Contains(err.Error(), "No md superblock detected on /dev/vdb.") {
				t.Errorf("err %v", err)
			}
		}},
		{name: "exit 0 without uuid", body: `exit 0`, check: func(t *testing.T, m *Mdadm) {
			if _, err := m.Examine(context.Background(), "/dev/vdb"); !errors.Is(err, ErrNoSuperblock) {
				t.Errorf("err %v", err)
			}
		}},
		{name: "detail", body: `cat <<EOF
MD_LEVEL=raid10
MD_DEVICES=4
MD_METADATA=1.2
MD_UUID=3a7c1d0e:5b2f0a9c:1e2d3c4b:5a697887
MD_DEVNAME=tandem
MD_NAME=head-a:tandem
MD_DEVICE_dev_vdb_ROLE=0
MD_DEVICE_dev_vdb_DEV=/dev/vdb
MD_DEVICE_dev_vdc_ROLE=1
MD_DEVICE_dev_vdc_DEV=/dev/vdc
MD_DEVICE_dev_vdf_ROLE=spare
MD_DEVICE_dev_vdf_DEV=/dev/vdf
EOF
`, check: func(t *testing.T, m *Mdadm) {
			d, err := m.Detail(context.Background(), "/dev/md/tandem")
			if err != nil {
				t.Fatal(err)
			}
			if d.UUID != "3a7c1d0e:5b2f0a9c:1e2d3c4b:5a697887" || d.Devices != 4 || d.Members["/dev/vdb"] != "0" || d.Members["/dev/vdf"] != "spare" || len(d.Members) != 3 {
				t.Errorf("got %+v", d)
			}
		}},
		{name: "assemble reports on stderr", body: `echo "mdadm: /dev/md/tandem has been started with 3 drives (out of 4)." >&2`, check: func(t *testing.T, m *Mdadm) {
			rep, err := m.Assemble(context.Background(), "/dev/md/tandem", "u", "head-a", []string{"/dev/vdb"})
			if err != nil || rep != "/dev/md/tandem has been started with 3 drives (out of 4)." {
				t.Errorf("%q %v", rep, err)
			}
		}},
		{name: "no udev env", body: `echo "$MDADM_NO_UDEV$MDADM_NO_SYSTEMCTL" >&2; exit 1`, check: func(t *testing.T, m *Mdadm) {
			err := m.Stop(context.Background(), "/dev/md/tandem")
			var ee *ExecError
			if !errors.As(err, &ee) || strings.TrimSpace(ee.Stderr) != "11" || ee.Exit != 1 {
				t.Errorf("err %v", err)
			}
		}},
		{name: "timeout", body: "exec sleep 10", timeout: 200 * time.Millisecond, check: func(t *testing.T, m *Mdadm) {
			start := time.Now()
			err := m.Stop(context.Background(), "/dev/md/tandem")
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
				t.Errorf("err %v after %s", err, time.Since(start))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Mdadm{Path: script(t, t.TempDir(), "mdadm", tt.body), Timeout: tt.timeout}
			tt.check(t, m)
		})
	}
	t.Run("missing binary", func(t *testing.T) {
		m := &Mdadm{Path: filepath.Join(dir, "nope")}
		if _, err := m.Examine(context.Background(), "/dev/vdb"); !errors.Is(err, services.ErrToolMissing) {
			t.Errorf("err %v", err)
		}
	})
}

// TestRealMdadm runs the real mdadm on image files: what needs no md
// driver (examine, and the messages for files without superblocks).
func TestRealMdadm(t *testing.T) {
	bin := hosttool.Require(t, "mdadm", "mdadm")
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Mdadm{Path: bin}
	_, err := m.Examine(context.Background(), p)
	if !errors.Is(err, ErrNoSuperblock) {
		t.Errorf("examine blank file: %v", err)
	}
	_, err = m.Examine(context.Background(), p+".missing")
	if !errors.Is(err, services.ErrNotFound) {
		t.Errorf("examine missing file: %v", err)
	}
	// --config=none must be accepted by this mdadm.
	out, _ := exec.Command(bin, "--examine", "--config=none", p).CombinedOutput()
	if strings.Contains(string(out), "unrecognised") || strings.Contains(string(out), "invalid") {
		t.Errorf("--config=none: %s", out)
	}
	if !slices.Contains(CreateSpec{}.Args(), "--config=none") {
		t.Error("create does not pass --config=none")
	}
}
