package disks

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeProc writes a /proc with self/mountinfo and, unless mdstat is
// "-", mdstat.
func fakeProc(t *testing.T, mountinfo, mdstat string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "self", "mountinfo"), []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	if mdstat != "-" {
		if err := os.WriteFile(filepath.Join(root, "mdstat"), []byte(mdstat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// usageSys is a head booted from vda (partitions with the image's
// labels), with a data disk mounted through a partition (vdb), one in a
// running array (vdc), one held by device-mapper (vdd), one in an
// inactive array through a partition (vde), and an unused one (vdf)
// whose partition has a foreign label.
func usageSys(t *testing.T) Finder {
	disk := func(name, dev string) map[string]string {
		return map[string]string{name + "/device/vendor": "0x1af4", name + "/serial": "s-" + name, name + "/size": "16384", name + "/dev": dev}
	}
	files := map[string]string{
		"vda/vda1/partition": "1", "vda/vda1/uevent": "MAJOR=252\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=esp\n", "vda/vda1/dev": "252:1",
		"vda/vda2/partition": "2", "vda/vda2/uevent": "PARTNAME=tandem-root-a\n", "vda/vda2/dev": "252:2",
		"vda/vda5/partition": "5", "vda/vda5/uevent": "PARTNAME=tandem-state\n", "vda/vda5/dev": "252:5",
		"vdb/vdb1/partition": "1", "vdb/vdb1/uevent": "PARTNAME=data\n", "vdb/vdb1/dev": "252:17",
		"vdc/holders/md127":  "",
		"vdd/holders/dm-0":   "",
		"vde/vde1/partition": "1", "vde/vde1/dev": "252:65",
		"vdf/vdf1/partition": "1", "vdf/vdf1/uevent": "PARTNAME=Linux filesystem\n", "vdf/vdf1/dev": "252:81",
	}
	for i, n := range []string{"vda", "vdb", "vdc", "vdd", "vde", "vdf"} {
		for k, v := range disk(n, fmt.Sprintf("252:%d", 16*i)) {
			files[k] = v
		}
	}
	mountinfo := "1 0 0:21 / / rw - rootfs rootfs rw\n" +
		"22 1 7:0 / /newroot ro - squashfs /dev/loop0 ro\n" +
		"23 1 252:5 / /var/lib/tandem rw - ext4 /dev/vda5 rw\n" +
		"24 1 252:17 / /mnt/old\\040data rw - xfs /dev/vdb1 rw\n"
	mdstat := "Personalities : [raid10]\nmd127 : active raid10 vdc[0] vdz[1]\n      2093056 blocks super 1.2 [2/2] [UU]\n\nmd126 : inactive vde1[0](S)\n      1024 blocks\n\nunused devices: <none>\n"
	return Finder{SysRoot: fakeSys(t, files), DevDir: t.TempDir(), ProcRoot: fakeProc(t, mountinfo, mdstat)}
}

func TestUsage(t *testing.T) {
	f := usageSys(t)
	tests := []struct {
		disk          string
		system, inUse bool
		want          Usage
		wantInString  string
	}{
		{"vda", true, true, Usage{Boot: []string{"vda1 (esp)", "vda2 (tandem-root-a)", "vda5 (tandem-state)"}, Mounted: []string{"vda5 on /var/lib/tandem"}}, "boot partitions vda1 (esp)"},
		{"vdb", true, true, Usage{Mounted: []string{"vdb1 on /mnt/old data"}}, "mounted: vdb1 on /mnt/old data"},
		{"vdc", false, true, Usage{Holders: []string{"md127"}, Arrays: []string{"md127"}}, "held by md127; in md array md127"},
		{"vdd", false, true, Usage{Holders: []string{"dm-0"}}, "held by dm-0"},
		{"vde", false, true, Usage{Arrays: []string{"md126"}}, "in md array md126"},
		{"vdf", false, false, Usage{}, "unused"},
	}
	for _, tt := range tests {
		t.Run(tt.disk, func(t *testing.T) {
			u, err := f.Usage(Disk{Name: tt.disk})
			if err != nil {
				t.Fatal(err)
			}
			eq := slices.Equal[[]string]
			if !eq(u.Boot, tt.want.Boot) || !eq(u.Mounted, tt.want.Mounted) || !eq(u.Holders, tt.want.Holders) || !eq(u.Arrays, tt.want.Arrays) {
				t.Errorf("usage %+v, want %+v", u, tt.want)
			}
			if u.System() != tt.system || u.InUse() != tt.inUse {
				t.Errorf("system %v in use %v, want %v %v", u.System(), u.InUse(), tt.system, tt.inUse)
			}
			if !strings.Contains(u.String(), tt.wantInString) {
				t.Errorf("String() = %q, want %q in it", u, tt.wantInString)
			}
		})
	}
}

func TestUsageNeedsMountTable(t *testing.T) {
	f := usageSys(t)
	f.ProcRoot = t.TempDir() // no self/mountinfo
	if _, err := f.Usage(Disk{Name: "vdf"}); err == nil {
		t.Error("no mount table, but no error: an unknown mount was taken for none")
	}
	f.ProcRoot = fakeProc(t, "", "-") // no md driver: no arrays, no error
	if u, err := f.Usage(Disk{Name: "vdf"}); err != nil || u.InUse() {
		t.Errorf("without /proc/mdstat: %+v, %v", u, err)
	}
}
