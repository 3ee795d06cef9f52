package vip

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A /proc/net/tcp as a head serving NFS shows it: two clients on the
// VIP's 2049, one on the head's own address, one mountd connection and
// one closing connection.
const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0801 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0A00000A:0801 0200000A:0360 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   2: 0A00000A:0801 0300000A:0361 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   3: 0B00000A:0801 0400000A:0362 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   4: 0A00000A:9C3F 0200000A:0363 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   5: 0A00000A:0801 0500000A:0364 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
`

func TestParseProcNetTCP(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.10")
	tests := []struct {
		name  string
		ports []uint16
		want  []Conn
	}{
		{"nfs", []uint16{2049}, []Conn{
			{netip.MustParseAddrPort("10.0.0.10:2049"), netip.MustParseAddrPort("10.0.0.2:864")},
			{netip.MustParseAddrPort("10.0.0.10:2049"), netip.MustParseAddrPort("10.0.0.3:865")},
		}},
		{"mountd too", []uint16{2049, 39999}, []Conn{
			{netip.MustParseAddrPort("10.0.0.10:2049"), netip.MustParseAddrPort("10.0.0.2:864")},
			{netip.MustParseAddrPort("10.0.0.10:2049"), netip.MustParseAddrPort("10.0.0.3:865")},
			{netip.MustParseAddrPort("10.0.0.10:39999"), netip.MustParseAddrPort("10.0.0.2:867")},
		}},
		{"no such port", []uint16{445}, nil},
	}
	for _, tc := range tests {
		got, err := parseProcNetTCP(strings.NewReader(procNetTCP), vip, tc.ports)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := parseProcNetTCP(strings.NewReader("hdr\n 0: zz:0801 0200000A:0360 01\n"), vip, []uint16{2049}); err == nil {
		t.Error("a malformed line was accepted")
	}
}

// The segment is a bare ACK with seq and ack 0, and its checksum
// verifies: summing the pseudo-header and the segment gives 0xffff.
func TestTickleSegment(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.0.0.10:2049"), netip.MustParseAddrPort("10.0.0.2:864")
	seg := tickleSegment(src, dst)
	if len(seg) != 20 || binary.BigEndian.Uint16(seg[0:]) != 2049 || binary.BigEndian.Uint16(seg[2:]) != 864 ||
		binary.BigEndian.Uint32(seg[4:]) != 0 || binary.BigEndian.Uint32(seg[8:]) != 0 || seg[13] != 0x10 || seg[12] != 0x50 {
		t.Fatalf("segment % x", seg)
	}
	if c := tcpChecksum(src.Addr(), dst.Addr(), seg); c != 0 {
		t.Errorf("checksum does not verify: residue %#04x", c)
	}
	other := tickleSegment(src, netip.MustParseAddrPort("10.0.0.3:864"))
	if binary.BigEndian.Uint16(other[16:]) == binary.BigEndian.Uint16(seg[16:]) {
		t.Error("the checksum ignores the destination address")
	}
}

// Monitor records the clients on the replicated filesystem, rewriting
// the file only when the list changes; Start on the next head reads it.
func TestRecordClients(t *testing.T) {
	dir := t.TempDir()
	proc := filepath.Join(dir, "tcp")
	if err := os.WriteFile(proc, []byte(procNetTCP), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "state", "vip", "tcp-clients.json")
	r := &Resource{cfg: Config{Address: netip.MustParsePrefix("10.0.0.10/24"), ClientsFile: file, TicklePorts: []uint16{2049}, ProcNetTCP: proc},
		log: slog.New(slog.DiscardHandler)}
	r.recordClients()
	got, err := loadConns(file)
	if err != nil || len(got) != 2 || got[0].Client.String() != "10.0.0.2:864" {
		t.Fatalf("recorded %v, %v", got, err)
	}
	st1, _ := os.Stat(file)
	os.Chtimes(file, st1.ModTime().Add(-1e9*3600), st1.ModTime().Add(-1e9*3600))
	r.recordClients()
	if st2, _ := os.Stat(file); !st2.ModTime().Before(st1.ModTime()) {
		t.Error("an unchanged list was written again")
	}
	if err := os.WriteFile(proc, []byte(strings.SplitAfterN(procNetTCP, "\n", 3)[0]+strings.SplitAfterN(procNetTCP, "\n", 3)[1]), 0o644); err != nil {
		t.Fatal(err)
	}
	r.recordClients()
	if got, _ := loadConns(file); len(got) != 0 {
		t.Errorf("after the clients left: %v", got)
	}
	if got, err := loadConns(filepath.Join(dir, "missing.json")); got != nil || err != nil {
		t.Errorf("a missing list: %v, %v", got, err)
	}
}

// The VIP deleted under the head: Stop keeps the monitor's last client
// list (the connections are gone with the address), so the restart's
// Start still tickles the clients that wait.
func TestStopKeepsClientsOfDeletedVIP(t *testing.T) {
	dir := t.TempDir()
	proc := filepath.Join(dir, "tcp")
	if err := os.WriteFile(proc, []byte(procNetTCP), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "state", "vip", "tcp-clients.json")
	r, fn, _ := newTest(t, eth0(true), 1)
	r.cfg.ClientsFile, r.cfg.TicklePorts, r.cfg.ProcNetTCP = file, []uint16{2049}, proc
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Monitor(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The address is deleted; nfsd drops the connections.
	fn.DelAddr(*fn.link, r.cfg.Address)
	os.WriteFile(proc, []byte(strings.SplitAfterN(procNetTCP, "\n", 2)[0]), 0o644)
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, err := loadConns(file); err != nil || len(got) != 2 {
		t.Errorf("after Stop of a deleted VIP the list is %v, %v; want the monitor's 2 clients", got, err)
	}
}
