package pid1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testDep = `kernel/fs/ext4/ext4.ko: kernel/lib/libcrc32c.ko kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko
kernel/lib/libcrc32c.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/a.ko:
kernel/b.ko:
kernel/post.ko:
`

const testSoftdep = `# Soft dependencies extracted from modules themselves.
softdep libcrc32c pre: crc32c
softdep ext4 pre: crc32c
softdep a pre: b post: post
softdep b pre: a
`

const testAlias = `alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias crc32c crc32c-intel
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
`

func testDB(t *testing.T) *modDB {
	t.Helper()
	db := newModDB()
	for _, p := range []struct {
		parse func(r *strings.Reader) error
		s     string
	}{
		{func(r *strings.Reader) error { return db.parseDep(r) }, testDep},
		{func(r *strings.Reader) error { return db.parseSoftdep(r) }, testSoftdep},
		{func(r *strings.Reader) error { return db.parseAlias(r) }, testAlias},
		{func(r *strings.Reader) error { return db.parseBuiltin(r) }, "kernel/fs/squashfs/squashfs.ko\n"},
	} {
		if err := p.parse(strings.NewReader(p.s)); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func planString(items []planItem) string {
	var s []string
	for _, it := range items {
		n := it.Name
		if it.Soft {
			n += "?"
		}
		s = append(s, n)
	}
	return strings.Join(s, " ")
}

func TestPlan(t *testing.T) {
	db := testDB(t)
	tests := []struct {
		name string
		in   []string
		want string // "?" marks soft items
	}{
		{"single", []string{"virtio_blk"}, "virtio virtio_ring virtio_blk"},
		{"shared deps once, order kept", []string{"virtio_pci", "virtio_blk"},
			"virtio_pci_modern_dev virtio virtio_ring virtio_pci virtio_blk"},
		{"hyphen name", []string{"virtio-blk"}, "virtio virtio_ring virtio_blk"},
		{"softdep alias before hard dep", []string{"ext4"},
			"crc32c_generic? crc32c_intel? libcrc32c jbd2 mbcache ext4"},
		{"softdep requested later becomes hard", []string{"ext4", "crc32c_generic"},
			"crc32c_generic crc32c_intel? libcrc32c jbd2 mbcache ext4"},
		{"pre and post, cycle broken", []string{"a"}, "b? a post?"},
		{"builtin kept", []string{"squashfs"}, "squashfs"},
		{"unknown passed through", []string{"nosuch"}, "nosuch"},
		{"alias pattern", []string{"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"},
			"virtio_pci_modern_dev virtio virtio_ring virtio_pci"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := planString(db.plan(tt.in)); got != tt.want {
				t.Errorf("plan(%q)\n got %s\nwant %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestModName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/fs/foo-bar.ko.xz": "foo_bar",
		"foo-bar":                 "foo_bar",
		" x.ko ":                  "x",
		"kernel/a/b.ko.zst":       "b",
	} {
		if got := modName(in); got != want {
			t.Errorf("modName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadModDB(t *testing.T) {
	dir := t.TempDir()
	if _, err := readModDB(dir); err == nil {
		t.Fatal("want an error without modules.dep")
	}
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(testDep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.softdep"), []byte(testSoftdep), 0o644)
	db, err := readModDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !db.known["ext4"] || len(db.pre["ext4"]) != 1 || len(db.aliases) != 0 {
		t.Errorf("unexpected db: %+v", db)
	}
}
