package inventory

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/wizard"
)

// writeTree writes files (path relative to root -> content); a path
// ending in "/" is a directory.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if strings.HasSuffix(rel, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const diskSize = 2 << 20

// fakeDisk is a disk's sysfs files and its image's content at offsets
// (negative: from the end).
type fakeDisk struct {
	sys     map[string]string // relative to block/<name>/
	patches map[int64][]byte
}

// head is an unconfigured head: booted from vda, data disks of every
// kind, NICs with and without a link, and virtual NICs.
var head = struct {
	nics  map[string]map[string]string // class/net/<name>/ files
	disks map[string]fakeDisk
}{
	nics: map[string]map[string]string{
		"lo":     {"address": "00:00:00:00:00:00", "carrier": "1"},
		"eno1":   {"device/": "", "address": "3C:EC:EF:00:01:01", "carrier": "1", "speed": "1000"},
		"eno2":   {"device/": "", "address": "3c:ec:ef:00:01:02", "carrier": "0", "speed": "-1"},
		"enp1s0": {"device/": "", "address": "b8:ce:f6:00:01:10"}, // down: carrier and speed unreadable
		"bond0":  {"address": "3c:ec:ef:00:01:01", "carrier": "1", "speed": "2000"},
		"veth0":  {"address": "02:00:00:00:00:01", "carrier": "1", "speed": "10000"},
	},
	disks: map[string]fakeDisk{
		"vda": {sys: map[string]string{"serial": "BOOT1", "dev": "252:0",
			"vda1/partition": "1", "vda1/uevent": "PARTNAME=esp\n", "vda1/dev": "252:1",
			"vda2/partition": "2", "vda2/uevent": "PARTNAME=tandem-root-a\n", "vda2/dev": "252:2"},
			patches: map[int64][]byte{512: []byte("EFI PART")}},
		"vdb": {sys: map[string]string{"serial": "XFS1", "dev": "252:16"}, patches: map[int64][]byte{0: []byte("XFSB")}},
		"vdc": {sys: map[string]string{"serial": "BLANK1", "dev": "252:32"}},
		"vdd": {sys: map[string]string{"serial": "MD1", "dev": "252:48"}, patches: map[int64][]byte{4096: binary.LittleEndian.AppendUint32(nil, 0xa92b4efc)}},
		"vde": {sys: map[string]string{"serial": "JUNK1", "dev": "252:64"}, patches: map[int64][]byte{-1: {7}}},
		"vdf": {sys: map[string]string{"dev": "252:80"}},                         // no serial
		"vdg": {sys: map[string]string{"serial": "TWIN", "dev": "252:96"}},       // serial twice
		"vdh": {sys: map[string]string{"serial": "TWIN", "dev": "252:112"}},      //
		"vdi": {sys: map[string]string{"serial": "HAS SPACE", "dev": "252:128"}}, // not serial:X-able
		"vdj": {sys: map[string]string{"serial": "HELD1", "dev": "252:144", "holders/dm-0": ""}},
		"nvme0n1": {sys: map[string]string{"device/serial": "S4EVNF0M123456  ", "device/model": "Samsung SSD 970 EVO Plus 2TB  ",
			"dev": "259:0"}},
		"sdz":   {sys: map[string]string{"device/vendor": "Generic", "device/model": "Card Reader", "device/serial": "CR1", "size": "0"}},
		"loop0": {sys: map[string]string{}},
	},
}

// fakeHead writes head's trees and returns options reading them.
func fakeHead(t *testing.T) Options {
	t.Helper()
	sys, dev, proc := t.TempDir(), t.TempDir(), t.TempDir()
	for name, files := range head.nics {
		for rel, c := range files {
			writeTree(t, sys, map[string]string{"class/net/" + name + "/" + rel: c})
		}
	}
	for name, d := range head.disks {
		files := map[string]string{"block/" + name + "/device/vendor": "0x1af4", "block/" + name + "/size": fmt.Sprint(diskSize / 512)}
		for rel, c := range d.sys {
			files["block/"+name+"/"+rel] = c
		}
		writeTree(t, sys, files)
		img := make([]byte, diskSize)
		for off, b := range d.patches {
			if off < 0 {
				off += diskSize
			}
			copy(img[off:], b)
		}
		if err := os.WriteFile(filepath.Join(dev, name), img, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeTree(t, proc, map[string]string{"self/mountinfo": "1 0 0:21 / / rw - rootfs rootfs rw\n22 1 252:2 / /newroot ro - squashfs /dev/vda2 ro\n"})
	return Options{SysRoot: sys, DevDir: dev, ProcRoot: proc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		net: func() (netState, error) {
			return netState{links: map[string]linkNet{
				"lo":   {addrs: []string{"127.0.0.1/8"}},
				"eno1": {mac: "3c:ec:ef:00:01:01", addrs: []string{"10.0.0.11/24", "2001:db8::11/64"}},
				"eno2": {mac: "3c:ec:ef:00:01:aa"}, // permanent address wins over sysfs's current one
			}, gateway: "10.0.0.1", gatewayLink: "eno1"}, nil
		}}
}

func TestRead(t *testing.T) {
	hw, err := New(fakeHead(t)).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantNICs := []wizard.NIC{
		{Name: "eno1", MAC: "3c:ec:ef:00:01:01", Link: true, SpeedMbps: 1000, Addrs: []string{"10.0.0.11/24", "2001:db8::11/64"}, Wizard: true},
		{Name: "eno2", MAC: "3c:ec:ef:00:01:aa"},
		{Name: "enp1s0", MAC: "b8:ce:f6:00:01:10"},
	}
	if !reflect.DeepEqual(hw.NICs, wantNICs) {
		t.Errorf("NICs\n got %+v\nwant %+v", hw.NICs, wantNICs)
	}
	if hw.Gateway != "10.0.0.1" {
		t.Errorf("gateway %q", hw.Gateway)
	}
	disk := func(serial, model, sig string, system bool) wizard.Disk {
		return wizard.Disk{Model: model, Serial: serial, SizeBytes: diskSize, Signature: sig, System: system}
	}
	wantDisks := []wizard.Disk{ // Finder's order: by kernel name
		disk("S4EVNF0M123456", "Samsung SSD 970 EVO Plus 2TB", "", false),
		disk("BOOT1", "", "GPT partition table", true),
		disk("XFS1", "", "xfs", false),
		disk("BLANK1", "", "", false),
		disk("MD1", "", "md RAID (v1.2)", false),
		disk("JUNK1", "", "non-zero data in the last MiB (at byte 2097151)", false),
		disk("HELD1", "", "in use: held by dm-0", false),
	}
	if len(hw.Disks) != len(wantDisks) {
		t.Fatalf("disks\n got %+v\nwant %+v", hw.Disks, wantDisks)
	}
	for i, w := range wantDisks {
		if hw.Disks[i] != w {
			t.Errorf("disk %d: got %+v, want %+v", i, hw.Disks[i], w)
		}
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(o *Options)
		want   string
	}{
		{"no mount table: the system disk is unknown", func(o *Options) { os.Remove(filepath.Join(o.ProcRoot, "self", "mountinfo")) }, "mount table"},
		{"no netlink", func(o *Options) {
			o.net = func() (netState, error) { return netState{}, errors.New("netlink: permission denied") }
		}, "netlink"},
		{"no sysfs net", func(o *Options) { os.RemoveAll(filepath.Join(o.SysRoot, "class")) }, "NICs"},
		{"no sysfs block", func(o *Options) { os.RemoveAll(filepath.Join(o.SysRoot, "block")) }, "disks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := fakeHead(t)
			tt.break_(&o)
			if _, err := New(o).Read(context.Background()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want %q in it", err, tt.want)
			}
		})
	}
}

// TestReadBounded: a disk whose read hangs in the kernel shows as
// unreadable after ProbeTimeout; while it stays blocked, later Reads do
// not start another read of it; once it answers, it is read again.
func TestReadBounded(t *testing.T) {
	o := fakeHead(t)
	o.ProbeTimeout = 50 * time.Millisecond
	release := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	o.probe = func(path string) (disks.Content, error) {
		if filepath.Base(path) == "vdb" {
			mu.Lock()
			calls++
			mu.Unlock()
			<-release
		}
		return disks.ProbePath(path)
	}
	r := New(o)
	sigOf := func() string {
		t.Helper()
		hw, err := r.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range hw.Disks {
			if d.Serial == "BLANK1" && d.Signature != "" {
				t.Errorf("a hung disk spoilt another: %+v", d)
			}
			if d.Serial == "XFS1" {
				return d.Signature
			}
		}
		t.Fatal("XFS1 not in the inventory")
		return ""
	}
	start := time.Now()
	if s := sigOf(); s != "unreadable: no answer in 50ms" {
		t.Errorf("hung disk: %q", s)
	}
	if s := sigOf(); !strings.HasPrefix(s, "unreadable: a read has been blocked for") {
		t.Errorf("still hung: %q", s)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("two reads took %s", el)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for s := sigOf(); s != "xfs"; s = sigOf() {
		if time.Now().After(deadline) {
			t.Fatalf("after the disk answered: %q", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Errorf("%d reads of the hung disk, want one while it hung, then one more", calls)
	}
}
