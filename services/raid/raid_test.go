package raid

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/site"
)

const uuidA = "3a7c1d0e:5b2f0a9c:1e2d3c4b:5a697887"
const uuidB = "99999999:5b2f0a9c:1e2d3c4b:5a697887"

func disk(name string) *disks.Disk { return &disks.Disk{Name: name, Path: "/dev/" + name} }

func sb(uuid, name string) *Superblock {
	return &Superblock{UUID: uuid, Name: name, Level: "raid10", Devices: 4}
}

var blank = disks.Content{Blank: true}

func TestDecide(t *testing.T) {
	ids := []string{"serial:d0", "serial:d1", "serial:d2", "serial:d3"}
	// mk builds members from per-disk states: "blank", "missing", "xfs",
	// "A" (Tandem array uuidA), "B", "foreign" (another system's md).
	mk := func(states ...string) []member {
		ms := make([]member, len(states))
		for i, s := range states {
			ms[i] = member{ID: ids[i], Disk: disk(fmt.Sprintf("vd%c", 'b'+i))}
			switch s {
			case "blank":
				ms[i].Content = blank
			case "missing":
				ms[i].Disk = nil
			case "xfs":
				ms[i].Content = disks.Content{Sig: "xfs", What: "xfs signature"}
			case "data":
				ms[i].Content = disks.Content{What: "non-zero data in the first MiB (at byte 446)"}
			case "A":
				ms[i].SB = sb(uuidA, "head-a:tandem")
			case "A-other-head":
				ms[i].SB = sb(uuidA, "head-b:tandem")
			case "B":
				ms[i].SB = sb(uuidB, "head-a:tandem")
			case "foreign":
				ms[i].SB = sb(uuidB, "fileserver:0")
			}
		}
		return ms
	}
	tests := []struct {
		name     string
		ms       []member
		create   bool
		want     string // expected uuid for assemble
		action   action
		devices  []string
		kind     services.Kind
		errHas   []string
		notesHas []string
	}{
		{name: "create on four blank disks", ms: mk("blank", "blank", "blank", "blank"), create: true,
			action: actCreate, devices: []string{"/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"}},
		{name: "blank without consent", ms: mk("blank", "blank", "blank", "blank"),
			kind: services.Refused, errHas: []string{"create_if_blank is false", "serial:d0 (vdb)"}},
		{name: "one disk holds xfs", ms: mk("blank", "xfs", "blank", "blank"), create: true,
			kind: services.Refused, errHas: []string{"serial:d1 (vdc) holds xfs signature", "will not create"}},
		{name: "data and a foreign array", ms: mk("data", "blank", "foreign", "blank"), create: true,
			kind: services.Refused, errHas: []string{"serial:d0 (vdb) holds non-zero data in the first MiB (at byte 446)", `serial:d2 (vdd) holds md array "fileserver:0"`}},
		{name: "missing disk before create", ms: mk("blank", "blank", "missing", "blank"), create: true,
			kind: services.Missing, errHas: []string{"serial:d2 not found", "disks here: HERE"}},
		{name: "nothing present", ms: mk("missing", "missing", "missing", "missing"), create: true,
			kind: services.Missing, errHas: []string{"none of the 4 configured disks is present"}},
		{name: "assemble existing", ms: mk("A", "A", "A", "A"), create: true,
			action: actAssemble, want: uuidA, devices: []string{"/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"}},
		{name: "assemble without consent to create", ms: mk("A", "A", "A", "A"),
			action: actAssemble, want: uuidA, devices: []string{"/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"}},
		{name: "assemble the other head's disks", ms: mk("A-other-head", "A-other-head", "A-other-head", "A-other-head"),
			action: actAssemble, want: uuidA, devices: []string{"/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"}},
		{name: "degraded: one missing", ms: mk("A", "A", "missing", "A"),
			action: actAssemble, want: uuidA, devices: []string{"/dev/vdb", "/dev/vdc", "/dev/vde"}, notesHas: []string{"serial:d2 is not present: starting degraded"}},
		{name: "degraded: replacement disk blank, left alone", ms: mk("A", "blank", "A", "A"), create: true,
			action: actAssemble, want: uuidA, devices: []string{"/dev/vdb", "/dev/vdd", "/dev/vde"}, notesHas: []string{"serial:d1 (vdc) is blank: not a member"}},
		{name: "degraded: a foreign disk is never touched", ms: mk("A", "A", "foreign", "xfs"),
			action: actAssemble, want: uuidA, devices: []string{"/dev/vdb", "/dev/vdc"}, notesHas: []string{`"fileserver:0"`, "serial:d3 (vde) holds xfs signature"}},
		{name: "two tandem arrays", ms: mk("A", "A", "B", "B"),
			kind: services.Refused, errHas: []string{"2 different Tandem arrays", uuidA, uuidB}},
		{name: "wrong member count", ms: func() []member { m := mk("A", "A", "A", "A"); m[0].SB.Devices = 6; return m }(),
			kind: services.Config, errHas: []string{"6 members", "names 4 disks"}},
		{name: "not raid10", ms: func() []member {
			m := mk("A", "A", "A", "A")
			m[0].SB.Level = "raid1"
			return m
		}(), kind: services.Refused, errHas: []string{"raid1, not raid10"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(tt.ms, tt.create, "", "HERE")
			if tt.errHas != nil {
				if d.err == nil {
					t.Fatalf("no error; decision %+v", d)
				}
				if d.kind != tt.kind {
					t.Errorf("kind %v, want %v (%v)", d.kind, tt.kind, d.err)
				}
				for _, s := range tt.errHas {
					if !strings.Contains(d.err.Error(), s) {
						t.Errorf("error %q\nlacks %q", d.err, s)
					}
				}
				if d.action != actNone {
					t.Errorf("action %v with an error", d.action)
				}
				return
			}
			if d.err != nil {
				t.Fatal(d.err)
			}
			if d.action != tt.action || d.uuid != tt.want || !slices.Equal(d.devices, tt.devices) {
				t.Errorf("got action %v uuid %q devices %v", d.action, d.uuid, d.devices)
			}
			notes := strings.Join(d.notes, "\n")
			for _, s := range tt.notesHas {
				if !strings.Contains(notes, s) {
					t.Errorf("notes %q\nlack %q", notes, s)
				}
			}
		})
	}
}

func TestDecideExpectedUUID(t *testing.T) {
	ms := []member{
		{ID: "a", Disk: disk("vdb"), SB: sb(uuidA, "head-a:tandem")},
		{ID: "b", Disk: disk("vdc"), SB: sb(uuidA, "head-a:tandem")},
		{ID: "c", Disk: disk("vdd"), SB: sb(uuidB, "head-a:tandem")},
		{ID: "d", Disk: disk("vde"), SB: sb(uuidB, "head-a:tandem")},
	}
	// With the UUID known, two arrays are no longer ambiguous.
	d := decide(ms, false, uuidB, "")
	if d.err != nil || d.uuid != uuidB || !slices.Equal(d.devices, []string{"/dev/vdd", "/dev/vde"}) {
		t.Errorf("got %+v", d)
	}
	// A known UUID that is nowhere is refused, never re-created.
	d = decide([]member{{ID: "a", Disk: disk("vdb"), Content: blank}}, true, uuidA, "")
	if d.kind != services.Refused || d.err == nil || !strings.Contains(d.err.Error(), "no configured disk holds it") {
		t.Errorf("got %+v", d)
	}
}

// rig is a fake head: sysfs with four virtio data disks, /dev with
// 2 MiB image files for them, and a fake mdadm that logs its calls and
// plays the kernel's part (makes /dev/md/tandem and /sys/block/md127).
type rig struct {
	t                         *testing.T
	sys, dev, proc, run, fake string
	ids                       []string
}

func newRig(t *testing.T) *rig {
	root := t.TempDir()
	g := &rig{t: t, sys: root + "/sys", dev: root + "/dev", proc: root + "/proc", run: root + "/run", fake: root + "/fake"}
	for _, d := range []string{g.dev, g.proc, g.run, g.fake + "/sb"} {
		must(t, os.MkdirAll(d, 0o755))
	}
	for i, name := range []string{"vdb", "vdc", "vdd", "vde"} {
		serial := fmt.Sprintf("head-a-data%d", i)
		g.ids = append(g.ids, "serial:"+serial)
		must(t, os.MkdirAll(filepath.Join(g.sys, "block", name, "device"), 0o755))
		must(t, os.WriteFile(filepath.Join(g.sys, "block", name, "serial"), []byte(serial+"\n"), 0o644))
		must(t, os.WriteFile(filepath.Join(g.sys, "block", name, "size"), []byte("4096\n"), 0o644))
		f, err := os.Create(filepath.Join(g.dev, name))
		must(t, err)
		must(t, f.Truncate(2<<20))
		f.Close()
	}
	return g
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (g *rig) mdadm() string {
	md := g.sys + "/block/md127/md"
	body := fmt.Sprintf(`F=%[1]s; DEV=%[2]s; MD=%[3]s
echo "$*" >> $F/calls
for a in "$@"; do last=$a; done
case "$1" in
--examine)
  b=$(basename "$last")
  if [ -f $F/sb/$b ]; then cat $F/sb/$b; exit 0; fi
  echo "mdadm: No md superblock detected on $last." >&2; exit 1;;
--detail)
  if [ -e $DEV/md/tandem ]; then printf 'MD_LEVEL=raid10\nMD_DEVICES=4\nMD_UUID=%[4]s\nMD_NAME=head-a:tandem\n'; exit 0; fi
  echo "mdadm: cannot open $last: No such file or directory" >&2; exit 1;;
--assemble|--create)
  if [ -f $F/fail ]; then cat $F/fail >&2; exit 1; fi
  mkdir -p $DEV/md $MD; touch $DEV/md127; ln -sf ../md127 $DEV/md/tandem
  echo clean > $MD/array_state; echo raid10 > $MD/level; echo 4 > $MD/raid_disks; echo idle > $MD/sync_action
  if [ -f $F/degraded ]; then cp $F/degraded $MD/degraded; else echo 0 > $MD/degraded; fi
  echo "mdadm: /dev/md/tandem has been started with 4 drives." >&2;;
--stop)
  if [ -f $F/busy ]; then echo "mdadm: Cannot get exclusive access to /dev/md127:Perhaps a running process, mounted filesystem or active volume group?" >&2; exit 1; fi
  if [ ! -e $DEV/md/tandem ]; then echo "mdadm: error opening $last: No such file or directory" >&2; exit 1; fi
  rm -rf $DEV/md/tandem $DEV/md127 %[5]s/block/md127
  echo "mdadm: stopped $last" >&2;;
esac
`, g.fake, g.dev, md, uuidA, g.sys)
	return script(g.t, g.fake, "mdadm", body)
}

func (g *rig) calls() []string {
	b, _ := os.ReadFile(g.fake + "/calls")
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (g *rig) raid(create bool, uuid string) *RAID {
	cfg := &site.Config{
		Nodes:   []site.Node{{Name: "head-a", Disks: g.ids}},
		Storage: site.Storage{RAID: site.RAID{Level: "raid10", CreateIfBlank: create, ChunkKiB: 256}},
	}
	c, err := FromSite(cfg, "head-a", uuid)
	must(g.t, err)
	r, err := New(c, Options{SysRoot: g.sys, DevDir: g.dev, ProcRoot: g.proc, RunDir: g.run, Mdadm: g.mdadm()})
	must(g.t, err)
	return r
}

func (g *rig) superblock(name, uuid string) {
	must(g.t, os.WriteFile(g.fake+"/sb/"+name, []byte("MD_LEVEL=raid10\nMD_DEVICES=4\nMD_NAME=head-a:tandem\nMD_UUID="+uuid+"\nMD_EVENTS=7\n"), 0o644))
}

func kindName(err error) string {
	if err == nil {
		return "ok"
	}
	return services.KindOf(err).String()
}

func TestStartCreatesOnBlank(t *testing.T) {
	g := newRig(t)
	r := g.raid(true, "")
	ctx := context.Background()
	must(t, r.Start(ctx))
	calls := g.calls()
	create := calls[len(calls)-2]
	want := "--create " + g.dev + "/md/tandem --config=none --level=10 --layout=n2 --raid-devices=4 --chunk=256 --metadata=1.2 --bitmap=internal --homehost=head-a --name=tandem " +
		g.dev + "/vdb " + g.dev + "/vdc " + g.dev + "/vdd " + g.dev + "/vde"
	if create != want {
		t.Errorf("create call\n got %s\nwant %s", create, want)
	}
	if r.UUID() != uuidA || r.Device() != g.dev+"/md/tandem" {
		t.Errorf("uuid %q device %q", r.UUID(), r.Device())
	}
	// Idempotent: a second Start only checks the running array.
	n := len(g.calls())
	must(t, r.Start(ctx))
	if extra := g.calls()[n:]; len(extra) != 1 || !strings.HasPrefix(extra[0], "--detail") {
		t.Errorf("second start ran %q", extra)
	}
	must(t, r.Monitor(ctx))
	must(t, r.Stop(ctx))
	must(t, r.Stop(ctx)) // not running: still fine
	if _, err := os.Lstat(g.dev + "/md/tandem"); !os.IsNotExist(err) {
		t.Errorf("array link left after stop: %v", err)
	}
}

func TestStartRefusals(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(g *rig)
		create bool
		kind   string
		errHas string
	}{
		{name: "blank, no consent", create: false, kind: "refused", errHas: "create_if_blank is false"},
		{name: "a disk holds xfs", create: true, setup: func(g *rig) {
			f, _ := os.OpenFile(g.dev+"/vdd", os.O_WRONLY, 0)
			f.WriteAt([]byte("XFSB"), 0)
			f.Close()
		}, kind: "refused", errHas: "serial:head-a-data2 (vdd) holds xfs signature"},
		{name: "a configured disk is absent", create: true, setup: func(g *rig) {
			os.RemoveAll(g.sys + "/block/vde")
		}, kind: "missing", errHas: "serial:head-a-data3 not found, and no present disk holds the array; disks here: vdb (serial:head-a-data0"},
		{name: "mdadm refuses create itself", create: true, setup: func(g *rig) {
			os.WriteFile(g.fake+"/fail", []byte("mdadm: partition table exists on /dev/vdb\nContinue creating array? mdadm: create aborted.\n"), 0o644)
		}, kind: "refused", errHas: "create aborted"},
		{name: "unclean and degraded wants --force", setup: func(g *rig) {
			for _, d := range []string{"vdb", "vdc", "vdd"} {
				g.superblock(d, uuidA)
			}
			os.WriteFile(g.fake+"/fail", []byte("mdadm: /dev/md/tandem assembled from 3 drives - not enough to start the array while not clean - consider --force.\n"), 0o644)
		}, kind: "refused", errHas: "wants --force"},
		{name: "too few members", setup: func(g *rig) {
			g.superblock("vdb", uuidA)
			g.superblock("vdc", uuidA)
			os.RemoveAll(g.sys + "/block/vdd")
			os.RemoveAll(g.sys + "/block/vde")
			os.WriteFile(g.fake+"/fail", []byte("mdadm: /dev/md/tandem assembled from 2 drives - not enough to start the array.\n"), 0o644)
		}, kind: "missing", errHas: "missing: serial:head-a-data2, serial:head-a-data3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig(t)
			if tt.setup != nil {
				tt.setup(g)
			}
			err := g.raid(tt.create, "").Start(context.Background())
			if kindName(err) != tt.kind || !strings.Contains(fmt.Sprint(err), tt.errHas) {
				t.Fatalf("got %s: %v\nwant %s containing %q", kindName(err), err, tt.kind, tt.errHas)
			}
			for _, c := range g.calls() {
				if strings.HasPrefix(c, "--create") && tt.name != "mdadm refuses create itself" {
					t.Errorf("created after all: %s", c)
				}
			}
		})
	}
}

func TestStartAssemblesDegraded(t *testing.T) {
	g := newRig(t)
	for _, d := range []string{"vdb", "vdc", "vde"} {
		g.superblock(d, uuidA)
	}
	os.RemoveAll(g.sys + "/block/vdd") // serial:head-a-data2 pulled
	os.WriteFile(g.fake+"/degraded", []byte("1\n"), 0o644)
	r := g.raid(true, "")
	ctx := context.Background()
	must(t, r.Start(ctx))
	var asm string
	for _, c := range g.calls() {
		if strings.HasPrefix(c, "--create") {
			t.Fatalf("created: %s", c)
		}
		if strings.HasPrefix(c, "--assemble") {
			asm = c
		}
	}
	want := "--assemble " + g.dev + "/md/tandem --config=none --run --uuid=" + uuidA + " --homehost=head-a " + g.dev + "/vdb " + g.dev + "/vdc " + g.dev + "/vde"
	if asm != want {
		t.Errorf("assemble\n got %s\nwant %s", asm, want)
	}
	// The array serves; Monitor says Degraded and names the pulled disk.
	md := g.sys + "/block/md127/md"
	for _, m := range []string{"vdb", "vdc", "vde"} {
		os.MkdirAll(md+"/dev-"+m, 0o755)
		os.WriteFile(md+"/dev-"+m+"/state", []byte("in_sync\n"), 0o644)
	}
	err := r.Monitor(ctx)
	if kindName(err) != "degraded" || !strings.Contains(err.Error(), "1 of 4 members missing or failed: serial:head-a-data2 not present; still serving") {
		t.Errorf("monitor: %v", err)
	}
	st, err := r.Status()
	if err != nil || st.UUID != uuidA || st.Device != g.dev+"/md/tandem" || st.Kernel != "md127" || st.Degraded != 1 ||
		len(st.Members) != 3 || st.Members[2].ID != "serial:head-a-data3" || st.Members[2].Kernel != "vde" {
		t.Errorf("status %+v %v", st, err)
	}
}

func TestStartWrongRunningArray(t *testing.T) {
	g := newRig(t)
	r := g.raid(true, "")
	must(t, r.Start(context.Background()))
	// The node's state says another UUID: a running array that is not
	// ours is refused, not adopted.
	r2 := g.raid(true, uuidB)
	err := r2.Start(context.Background())
	if kindName(err) != "refused" || !strings.Contains(err.Error(), "this head's array is "+uuidB) {
		t.Errorf("got %v", err)
	}
}

func TestStopBusy(t *testing.T) {
	g := newRig(t)
	r := g.raid(true, "")
	must(t, r.Start(context.Background()))
	os.WriteFile(g.fake+"/busy", nil, 0o644)
	err := r.Stop(context.Background())
	if kindName(err) != "failed" || !errors.Is(err, services.ErrInUse) || !strings.Contains(err.Error(), "DRBD attached?") {
		t.Errorf("got %v", err)
	}
}

func TestStartStopsInactiveArray(t *testing.T) {
	g := newRig(t)
	r := g.raid(true, "")
	must(t, r.Start(context.Background()))
	os.WriteFile(g.sys+"/block/md127/md/array_state", []byte("inactive\n"), 0o644)
	for _, d := range []string{"vdb", "vdc", "vdd", "vde"} {
		g.superblock(d, uuidA)
	}
	must(t, r.Start(context.Background()))
	calls := strings.Join(g.calls(), "\n")
	if !strings.Contains(calls, "--stop") || strings.Count(calls, "--assemble") != 1 {
		t.Errorf("calls:\n%s", calls)
	}
}

func TestMonitor(t *testing.T) {
	mdstat := func(lines ...string) string { return strings.Join(lines, "\n") + "\n" }
	tests := []struct {
		name    string
		attrs   map[string]string // md/<attr>
		members map[string]string // dev-<name>/state
		mdstat  string
		kind    string
		errHas  string
	}{
		{name: "healthy", attrs: map[string]string{"array_state": "clean", "degraded": "0", "raid_disks": "4", "sync_action": "idle"},
			members: map[string]string{"vdb": "in_sync", "vdc": "in_sync", "vdd": "in_sync", "vde": "in_sync"}, kind: "ok"},
		{name: "initial resync is healthy", attrs: map[string]string{"array_state": "active", "degraded": "0", "raid_disks": "4", "sync_action": "resync"},
			members: map[string]string{"vdb": "in_sync", "vdc": "in_sync", "vdd": "in_sync", "vde": "in_sync"}, kind: "ok"},
		{name: "faulty member", attrs: map[string]string{"array_state": "active", "degraded": "1", "raid_disks": "4", "sync_action": "idle"},
			members: map[string]string{"vdb": "in_sync", "vdc": "faulty", "vdd": "in_sync", "vde": "in_sync"},
			kind:    "degraded", errHas: "1 of 4 members missing or failed: serial:head-a-data1 (vdc) faulty; still serving"},
		{name: "rebuilding", attrs: map[string]string{"array_state": "active", "degraded": "1", "raid_disks": "4", "sync_action": "recover"},
			members: map[string]string{"vdb": "in_sync", "vdc": "spare", "vdd": "in_sync", "vde": "in_sync"},
			mdstat: mdstat("Personalities : [raid10] ",
				"md127 : active raid10 vdc[4] vde[3] vdd[2] vdb[0]",
				"      2093056 blocks super 1.2 256K chunks 2 near-copies [4/3] [U_UU]",
				"      [==>..................]  recovery = 12.6% (132096/1046528) finish=0.1min speed=132096K/sec",
				"      bitmap: 1/1 pages [4KB], 65536KB chunk", "", "unused devices: <none>"),
			kind: "degraded", errHas: "rebuilding (recovery = 12.6% (132096/1046528) finish=0.1min speed=132096K/sec)"},
		{name: "inactive", attrs: map[string]string{"array_state": "inactive"}, kind: "failed", errHas: "md127 is inactive"},
		{name: "read-only", attrs: map[string]string{"array_state": "readonly"}, kind: "failed", errHas: "readonly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig(t)
			r := g.raid(true, "")
			must(t, r.Start(context.Background()))
			md := g.sys + "/block/md127/md"
			for k, v := range tt.attrs {
				must(t, os.WriteFile(md+"/"+k, []byte(v+"\n"), 0o644))
			}
			for m, s := range tt.members {
				must(t, os.MkdirAll(md+"/dev-"+m, 0o755))
				must(t, os.WriteFile(md+"/dev-"+m+"/state", []byte(s+"\n"), 0o644))
			}
			if tt.mdstat != "" {
				must(t, os.WriteFile(g.proc+"/mdstat", []byte(tt.mdstat), 0o644))
			}
			err := r.Monitor(context.Background())
			if kindName(err) != tt.kind || !strings.Contains(fmt.Sprint(err), tt.errHas) {
				t.Errorf("got %s: %v\nwant %s containing %q", kindName(err), err, tt.kind, tt.errHas)
			}
		})
	}
	t.Run("not running", func(t *testing.T) {
		g := newRig(t)
		err := g.raid(true, "").Monitor(context.Background())
		if kindName(err) != "failed" || !strings.Contains(err.Error(), "is not running") {
			t.Errorf("got %v", err)
		}
	})
}

func TestKernelNameFromMapFile(t *testing.T) {
	g := newRig(t)
	r := g.raid(true, "")
	if _, ok := r.kernelName(); ok {
		t.Fatal("found an array that is not there")
	}
	must(t, os.MkdirAll(g.run+"/mdadm", 0o755))
	must(t, os.WriteFile(g.run+"/mdadm/map", []byte("md126 1.2 "+uuidB+" /dev/md/other\nmd127 1.2 "+uuidA+" /dev/md/tandem\n"), 0o644))
	if k, ok := r.kernelName(); !ok || k != "md127" {
		t.Errorf("got %q %v", k, ok)
	}
}

func TestParseMdstat(t *testing.T) {
	const s = `Personalities : [raid10] [raid1]
md126 : active raid1 sdb1[1] sda1[0]
      1046528 blocks super 1.2 [2/2] [UU]
      [=>...................]  resync =  8.5% (178560/1046528) finish=0.7min speed=44640K/sec

md127 : active raid10 vde[3] vdc[1](F) vdb[0]
      2093056 blocks super 1.2 512K chunks 2 near-copies [4/2] [U__U]
      bitmap: 1/1 pages [4KB], 65536KB chunk

unused devices: <none>
`
	tests := []struct{ kernel, health, progress string }{
		{"md127", "[4/2] [U__U]", ""},
		{"md126", "[2/2] [UU]", "resync = 8.5% (178560/1046528) finish=0.7min speed=44640K/sec"},
		{"md125", "", ""},
	}
	for _, tt := range tests {
		h, p := parseMdstat(bufio.NewScanner(strings.NewReader(s)), tt.kernel)
		if h != tt.health || p != tt.progress {
			t.Errorf("%s: %q %q", tt.kernel, h, p)
		}
	}
}

func TestFromSiteConfigErrors(t *testing.T) {
	ids := []string{"serial:a", "serial:b", "serial:c", "serial:d"}
	tests := []struct {
		name string
		cfg  *site.Config
		node string
	}{
		{"nil config", nil, "head-a"},
		{"unknown node", &site.Config{Nodes: []site.Node{{Name: "head-a", Disks: ids}}}, "head-b"},
		{"three disks", &site.Config{Nodes: []site.Node{{Name: "head-a", Disks: ids[:3]}}}, "head-a"},
		{"raid5", &site.Config{Nodes: []site.Node{{Name: "head-a", Disks: ids}}, Storage: site.Storage{RAID: site.RAID{Level: "raid5"}}}, "head-a"},
	}
	for _, tt := range tests {
		if _, err := FromSite(tt.cfg, tt.node, ""); services.KindOf(err) != services.Config {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}
