package disks

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeSys builds a /sys/block tree: files maps "vdb/serial" to content.
func fakeSys(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, "block", rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// vpd80 is a Unit Serial Number VPD page as the kernel exposes it.
func vpd80(serial string) string {
	return string([]byte{0, 0x80, 0, byte(len(serial))}) + serial
}

// labSys is a head with a virtio boot disk, four virtio data disks, an
// NVMe namespace, an ATA SSD with a WWN, a SAS disk, and virtual devices
// that must be ignored.
func labSys(t *testing.T) string {
	return fakeSys(t, map[string]string{
		"vda/device/vendor": "0x1af4\n", "vda/size": "4194304\n", "vda/serial": "tandem-boot",
		"vdb/device/vendor": "0x1af4\n", "vdb/size": "2097152\n", "vdb/serial": "head-a-data0",
		"vdc/device/vendor": "0x1af4\n", "vdc/size": "2097152\n", "vdc/serial": "head-a-data1",
		"vdd/device/vendor": "0x1af4\n", "vdd/size": "2097152\n", "vdd/serial": "head-a-data2",
		"vde/device/vendor": "0x1af4\n", "vde/size": "2097152\n", "vde/serial": "head-a-data3",
		"nvme0n1/size": "3750748848\n", "nvme0n1/wwid": "eui.0025388b71b1d2e3\n",
		"nvme0n1/device/serial": "S4EVNF0M123456      \n", "nvme0n1/device/model": "Samsung SSD 970 EVO Plus 2TB            \n",
		"sda/size": "3750748848\n", "sda/device/vendor": "ATA     \n", "sda/device/model": "SAMSUNG MZ7LH1T9\n",
		"sda/device/wwid": "naa.5002538E40A10004\n", "sda/device/vpd_pg80": vpd80("S455NY0M100003"),
		"sdb/size": "1000\n", "sdb/device/vendor": "SEAGATE \n", "sdb/device/model": "ST1200MM0009    \n",
		"sdb/device/vpd_pg80": vpd80("WFK0A1B2"),
		"loop0/size":          "100\n", "md127/size": "100\n", "md127/md/array_state": "clean\n",
		"dm-0/size": "100\n", "drbd0/size": "100\n", "sr0/device/vendor": "QEMU\n", "zram0/size": "1\n",
		// a block device with no backing device: nothing identifies it
		"vdz/size": "100\n",
	})
}

func TestScan(t *testing.T) {
	f := Finder{SysRoot: labSys(t), DevDir: "/dev"}
	got, err := f.Scan()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"vda":     {"serial:tandem-boot", "by-id/virtio-tandem-boot"},
		"vdb":     {"serial:head-a-data0", "by-id/virtio-head-a-data0"},
		"vdc":     {"serial:head-a-data1", "by-id/virtio-head-a-data1"},
		"vdd":     {"serial:head-a-data2", "by-id/virtio-head-a-data2"},
		"vde":     {"serial:head-a-data3", "by-id/virtio-head-a-data3"},
		"nvme0n1": {"serial:S4EVNF0M123456", "by-id/nvme-Samsung_SSD_970_EVO_Plus_2TB_S4EVNF0M123456", "by-id/nvme-eui.0025388b71b1d2e3"},
		"sda":     {"serial:S455NY0M100003", "by-id/ata-SAMSUNG_MZ7LH1T9_S455NY0M100003", "wwn:0x5002538e40a10004", "by-id/wwn-0x5002538e40a10004"},
		"sdb":     {"serial:WFK0A1B2", "by-id/scsi-SSEAGATE_ST1200MM0009_WFK0A1B2"},
	}
	var names []string
	for _, d := range got {
		names = append(names, d.Name)
		w, ok := want[d.Name]
		if !ok {
			t.Errorf("unexpected disk %s", d)
			continue
		}
		if !slices.Equal(d.IDs, w) {
			t.Errorf("%s: IDs\n got %q\nwant %q", d.Name, d.IDs, w)
		}
		if d.Path != "/dev/"+d.Name {
			t.Errorf("%s: path %s", d.Name, d.Path)
		}
	}
	if len(names) != len(want) {
		t.Errorf("disks %v, want %d", names, len(want))
	}
	if got[0].Name != "nvme0n1" || got[0].Size != 3750748848*512 {
		t.Errorf("first disk %s size %d (sorted by name, bytes)", got[0].Name, got[0].Size)
	}
}

func TestResolve(t *testing.T) {
	f := Finder{SysRoot: labSys(t)}
	tests := []struct {
		name    string
		ids     []string
		want    []string // kernel names, "" for missing
		wantErr error
	}{
		{name: "serials", ids: []string{"serial:head-a-data0", "serial:head-a-data1", "serial:head-a-data2", "serial:head-a-data3"},
			want: []string{"vdb", "vdc", "vdd", "vde"}},
		{name: "mixed spellings", ids: []string{"by-id/virtio-head-a-data3", "wwn:0x5002538E40A10004", "by-id/nvme-eui.0025388b71b1d2e3", "serial:WFK0A1B2"},
			want: []string{"vde", "sda", "nvme0n1", "sdb"}},
		{name: "one missing", ids: []string{"serial:head-a-data0", "serial:head-a-data9"}, want: []string{"vdb", ""}},
		{name: "same disk twice", ids: []string{"serial:S455NY0M100003", "wwn:0x5002538e40a10004"}, wantErr: ErrAmbiguous},
		{name: "kernel names never match", ids: []string{"vdb", "/dev/vdb", "by-id/vdb"}, want: []string{"", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, all, err := f.Resolve(tt.ids)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 8 {
				t.Errorf("all: %d disks", len(all))
			}
			for i, m := range got {
				name := ""
				if m.Disk != nil {
					name = m.Disk.Name
				}
				if m.ID != tt.ids[i] || name != tt.want[i] {
					t.Errorf("%d: %s -> %q, want %q", i, m.ID, name, tt.want[i])
				}
			}
		})
	}
}

func TestResolveAmbiguousSerial(t *testing.T) {
	// Two disks with one serial (a cloned VM disk, or multipath): refuse
	// to pick one.
	f := Finder{SysRoot: fakeSys(t, map[string]string{
		"vdb/device/vendor": "x", "vdb/serial": "same",
		"vdc/device/vendor": "x", "vdc/serial": "same",
	})}
	_, _, err := f.Resolve([]string{"serial:same"})
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "vdb, vdc") {
		t.Fatalf("err %v", err)
	}
}

func TestDescribe(t *testing.T) {
	f := Finder{SysRoot: labSys(t)}
	all, err := f.Scan()
	if err != nil {
		t.Fatal(err)
	}
	s := Describe(all)
	for _, want := range []string{"vdb (serial:head-a-data0, by-id/virtio-head-a-data0)", "sda (serial:S455NY0M100003"} {
		if !strings.Contains(s, want) {
			t.Errorf("Describe = %s\nmissing %q", s, want)
		}
	}
	if Describe(nil) != "no disks" {
		t.Error(Describe(nil))
	}
}

func TestUdevEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ata-SAMSUNG MZ7LH1T9HMLT-00005_S455", "ata-SAMSUNG_MZ7LH1T9HMLT-00005_S455"},
		{"  padded   model  ", "padded_model"},
		{"a/b\\c", "a_b_c"},
		{"keep#+-.:=@_", "keep#+-.:=@_"},
		{"ümlaut", "_mlaut"},
	}
	for _, tt := range tests {
		if got := udevEscape(tt.in); got != tt.want {
			t.Errorf("udevEscape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestVPDSerial(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"plain", []byte(vpd80("ABC123")), "ABC123"},
		{"padded", []byte(vpd80("  ABC123  \x00")), "ABC123"},
		{"wrong page", []byte{0, 0x83, 0, 3, 'a', 'b', 'c'}, ""},
		{"short", []byte{0, 0x80}, ""},
		{"length past end", []byte{0, 0x80, 0, 9, 'a', 'b'}, "ab"},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, tt.name)
		if err := os.WriteFile(p, tt.data, 0o644); err != nil {
			t.Fatal(err)
		}
		if got := vpdSerial(p); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
