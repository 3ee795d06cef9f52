package lvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/internal/hosttool"
	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

// TestClassify maps LVM 2.03 stderr (captured from lvm 2.03.16 runs on
// loop devices, or its format strings) to sentinels.
func TestClassify(t *testing.T) {
	const dmChatter = "  /dev/mapper/control: open failed: No such device\n  Failure to communicate with kernel device-mapper driver.\n  Check that device-mapper is available in the kernel.\n"
	const otherVGWarning = "  WARNING: Couldn't find device with uuid Qzubed-uHe4-bf7U-u9QW-7O9v-azl0-nWd61R.\n  WARNING: VG two is missing PV Qzubed-uHe4-bf7U-u9QW-7O9v-azl0-nWd61R (last written to /dev/loop3).\n"
	tests := []struct {
		name, stderr string
		want         error
	}{
		{"vg not found", "  Volume group \"tandem\" not found\n  Cannot process volume group tandem\n", services.ErrNotFound},
		{"lv not found", "  Failed to find logical volume \"tandem/nolv\"\n", services.ErrNotFound},
		{"pv not found", "  Failed to find physical volume \"/dev/drbd0\".\n", services.ErrNotFound},
		{"no device", "  No device found for /dev/drbd0.\n", services.ErrNotFound},
		{"vg exists", "  A volume group called tandem already exists.\n", ErrExists},
		{"lv exists", "  Logical Volume \"data\" already exists in volume group \"tandem\"\n", ErrExists},
		{"duplicate on activation", "  WARNING: Not using device /dev/md127 for PV wkWRFA-9IFf-zsd6-bNKS-Ox4Y-qyHn-6Ji8Ky.\n  WARNING: PV wkWRFA-9IFf-zsd6-bNKS-Ox4Y-qyHn-6Ji8Ky prefers device /dev/drbd0 because device name matches previous.\n" +
			"  Cannot activate LVs in VG tandem while PVs appear on duplicate devices.\n", ErrDuplicatePV},
		{"duplicate on pvcreate", "  Cannot use device /dev/loop3 with duplicates.\n", ErrDuplicatePV},
		{"filtered", "  Cannot use /dev/md127: device is rejected by filter config\n", ErrFiltered},
		{"pv of a vg", "  Can't initialize physical volume \"/dev/drbd0\" of volume group \"tandem\" without -ff\n  /dev/drbd0: physical volume not initialized.\n", services.ErrHasData},
		{"signature kept", "WARNING: xfs signature detected on /dev/drbd0 at offset 0. Wipe it? [y/n]: [n]\n  Aborted wiping of xfs.\n  1 existing signature left on the device.\n", services.ErrHasData},
		{"pv in another vg despite warnings", otherVGWarning + "  Physical volume '/dev/loop2' is already in volume group 'other'\n  Unable to add physical volume '/dev/loop2' to volume group 'other'\n", services.ErrHasData},
		{"lv open", "  Logical volume tandem/data in use.\n  Can't deactivate volume group \"tandem\" with 1 open logical volume(s)\n", services.ErrInUse},
		{"fs in use", "  Logical volume tandem/data contains a filesystem in use.\n", services.ErrInUse},
		{"exclusive", "  Can't open /dev/drbd0 exclusively.  Mounted filesystem?\n", services.ErrInUse},
		{"missing pv (only warnings)", otherVGWarning, ErrMissingPV},
		{"partial", "  Refusing activation of partial LV tandem/data.  Use '--activationmode partial' to override.\n", ErrMissingPV},
		{"no space", "  Volume group \"tandem\" has insufficient free space (0 extents): 25 required.\n", ErrNoSpace},
		{"no space 2", "  Insufficient free space: 2560 extents needed, but only 24 available\n", ErrNoSpace},
		{"no dm", dmChatter + "  striped: Required device-mapper target(s) not detected in your kernel.\n  Run `lvcreate --help' for more information.\n", ErrNoKernelDM},
		{"vg not found with dm chatter", dmChatter + "  Volume group \"tandem\" not found\n", services.ErrNotFound},
		{"unknown", "  something new\n", services.ErrToolFailed},
	}
	for _, tt := range tests {
		if got := classify(tt.stderr); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestConfigGolden checks the generated lvm.conf against the expected
// file (regenerate with TANDEM_UPDATE_GOLDEN=1).
func TestConfigGolden(t *testing.T) {
	got := RenderConfig(DefaultSystemDir)
	p := filepath.Join("testdata", "lvm.conf")
	if os.Getenv("TANDEM_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("lvm.conf differs from %s:\n%s", p, got)
	}
	for _, s := range []string{
		`filter = [ "a|^/dev/drbd|", "r|.*|" ]`, `global_filter = [ "a|^/dev/drbd|", "r|.*|" ]`,
		"udev_sync = 0", "udev_rules = 0", "obtain_device_list_from_udev = 0", "auto_activation_volume_list = []",
		`locking_dir = "/run/tandem/lvm/lock"`, `backup_dir = "/run/tandem/lvm/backup"`,
	} {
		if !strings.Contains(string(got), s) {
			t.Errorf("lvm.conf lacks %s", s)
		}
	}
}

func TestWriteConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lvm")
	if err := WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(dir + "/lvm.conf")
	time.Sleep(10 * time.Millisecond)
	if err := WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(dir + "/lvm.conf")
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("same content rewritten")
	}
	for _, d := range []string{"lock", "backup", "archive"} {
		if fi, err := os.Stat(dir + "/" + d); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
}

// TestRealLVMConfig has the real lvm validate the generated config and
// read the settings back.
func TestRealLVMConfig(t *testing.T) {
	bin := hosttool.Require(t, "lvm", "lvm2")
	dir := t.TempDir()
	if err := WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "LVM_SYSTEM_DIR="+dir, "LVM_SUPPRESS_FD_WARNINGS=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("lvm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("config", "--validate")
	out := run("config", "devices/filter", "devices/global_filter", "activation/auto_activation_volume_list", "activation/udev_sync", "devices/obtain_device_list_from_udev", "global/locking_dir")
	for _, s := range []string{`filter=["a|^/dev/drbd|","r|.*|"]`, `global_filter=["a|^/dev/drbd|","r|.*|"]`, "auto_activation_volume_list=[]",
		"udev_sync=0", "obtain_device_list_from_udev=0", `locking_dir="` + dir + `/lock"`} {
		if !strings.Contains(out, s) {
			t.Errorf("lvm config lacks %s:\n%s", s, out)
		}
	}
}

func TestLVCreateArgs(t *testing.T) {
	tests := []struct{ size, want string }{
		{"100%FREE", "lvcreate --name data --extents 100%FREE --wipesignatures n --zero y -- tandem"},
		{"800G", "lvcreate --name data --size 800G --wipesignatures n --zero y -- tandem"},
		{"1.5T", "lvcreate --name data --size 1.5T --wipesignatures n --zero y -- tandem"},
	}
	for _, tt := range tests {
		got := strings.Join(LVCreateArgs("tandem", "data", tt.size), " ")
		if got != tt.want {
			t.Errorf("%s: %s", tt.size, got)
		}
		if strings.Contains(got, "--yes") || strings.Contains(got, " -y") {
			t.Errorf("%s: answers yes: %s", tt.size, got)
		}
	}
}

// Real reports captured from lvm 2.03.16.
const realVGS = `  {
      "report": [
          {
              "vg": [
                  {"vg_name":"other", "vg_uuid":"xHy21D-zWRm-0Ra9-F2Um-XBF4-KojY-1BwvSr", "vg_attr":"wz--n-", "pv_count":"1", "vg_missing_pv_count":"0", "vg_partial":"", "lv_count":"0", "vg_size":"100663296", "vg_free":"100663296"},
                  {"vg_name":"two", "vg_uuid":"4cNjtn-sZ9m-C5l4-hyWN-Cdo4-B0tV-xaN2pZ", "vg_attr":"wz-pn-", "pv_count":"2", "vg_missing_pv_count":"1", "vg_partial":"partial", "lv_count":"1", "vg_size":"100663296", "vg_free":"0"}
              ]
          }
      ]
  }
`

const realLVS = `  {
      "report": [
          {
              "lv": [
                  {"lv_name":"data", "vg_name":"tandem", "lv_uuid":"aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg", "lv_attr":"-wi-a-----", "lv_active":"active", "lv_size":"100663296", "lv_path":"/dev/tandem/data", "lv_dm_path":"/dev/mapper/tandem-data", "lv_device_open":""}
              ]
          }
      ]
  }
`

func TestParseReport(t *testing.T) {
	rows, err := parseReport(realVGS, "vg")
	if err != nil || len(rows) != 2 {
		t.Fatalf("%v %v", rows, err)
	}
	vg := VG{MissingPVs: rows[1]["vg_missing_pv_count"], Partial: rows[1]["vg_partial"], Attr: rows[1]["vg_attr"]}
	if vg.Complete() {
		t.Error("partial VG complete")
	}
	if !(VG{MissingPVs: "0", Attr: "wz--n-"}).Complete() {
		t.Error("whole VG incomplete")
	}
	rows, err = parseReport(realLVS, "lv")
	if err != nil || len(rows) != 1 || rows[0]["lv_dm_path"] != "/dev/mapper/tandem-data" {
		t.Fatalf("%v %v", rows, err)
	}
	if _, err := parseReport("not json", "lv"); err == nil {
		t.Error("garbage parsed")
	}
	lvTests := []struct {
		lv              LV
		active, healthy bool
	}{
		{LV{Attr: "-wi-a-----", Active: "active"}, true, true},
		{LV{Attr: "-wi-------"}, false, true},
		{LV{Attr: "-wi-XX----", Active: ""}, false, true}, // no device-mapper: state unknown
		{LV{Attr: "-wi-a---p-", Active: "active"}, true, false},
		{LV{Attr: "-wi-a---r-", Active: "active"}, true, false},
	}
	for _, tt := range lvTests {
		if tt.lv.IsActive() != tt.active || tt.lv.Healthy() != tt.healthy {
			t.Errorf("%+v: active %v healthy %v", tt.lv, tt.lv.IsActive(), tt.lv.Healthy())
		}
	}
}

// fake is a fake lvm: a shell script keeping the PV/VG/LV state in
// files, printing lvm's JSON reports and real error messages. Like
// libdevmapper, it makes the LV's node (dir/dev/mapper/tandem-data) on
// activation, unless the file "nonode" exists.
type fake struct {
	t    *testing.T
	dir  string
	pv   string       // the "DRBD device": an image file
	logs bytes.Buffer // the volume's log, debug level
}

func newFake(t *testing.T) *fake {
	f := &fake{t: t, dir: t.TempDir()}
	f.pv = filepath.Join(f.dir, "drbd0")
	fh, err := os.Create(f.pv)
	if err != nil {
		t.Fatal(err)
	}
	fh.Truncate(4 << 20)
	fh.Close()
	return f
}

func (f *fake) touch(names ...string) {
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(f.dir, n), nil, 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fake) script() string {
	body := `F=` + f.dir + `
echo "$*" >> $F/calls
echo "$LVM_SYSTEM_DIR $LVM_SUPPRESS_FD_WARNINGS" > $F/env
for a in "$@"; do last=$a; done
cmd=$1
if [ -f $F/fail-$cmd ]; then cat $F/fail-$cmd >&2; exit 5; fi
novg() { echo '  Volume group "tandem" not found' >&2; echo '  Cannot process volume group tandem' >&2; exit 5; }
mknode() { [ -f $F/nonode ] || { mkdir -p $F/dev/mapper; : > $F/dev/mapper/tandem-data; }; }
case $cmd in
vgs)
  [ -f $F/vg ] || { echo '  {"report":[{"vg":[]}]}'; novg; }
  lc=0; [ -f $F/lv ] && lc=1; [ -f $F/otherlv ] && lc=1
  miss=0; part=""; attr=wz--n-; if [ -f $F/missing ]; then miss=1; part=partial; attr=wz-pn-; fi
  cat <<EOF
  {"report": [{"vg": [{"vg_name":"tandem", "vg_uuid":"4cNjtn-sZ9m-C5l4-hyWN-Cdo4-B0tV-xaN2pZ", "vg_attr":"$attr", "pv_count":"1", "vg_missing_pv_count":"$miss", "vg_partial":"$part", "lv_count":"$lc", "vg_size":"100663296", "vg_free":"0"}]}]}
EOF
  ;;
lvs)
  [ -f $F/vg ] || novg
  rows=""
  if [ -f $F/lv ]; then
    act=""; attr=-wi-------; if [ -f $F/active ]; then act=active; attr=-wi-a-----; fi
    if [ -f $F/suspended ]; then act=active; attr=-wi-s-----; fi
    rows="{\"lv_name\":\"data\", \"vg_name\":\"tandem\", \"lv_attr\":\"$attr\", \"lv_active\":\"$act\", \"lv_dm_path\":\"/dev/mapper/tandem-data\"}"
  fi
  if [ -f $F/otherlv ]; then rows="{\"lv_name\":\"scratch\", \"vg_name\":\"tandem\", \"lv_attr\":\"-wi-------\", \"lv_active\":\"\"}"; fi
  echo "  {\"report\": [{\"lv\": [$rows]}]}"
  ;;
pvs)
  if [ -f $F/pv ]; then vg=""; [ -f $F/vg ] && vg=tandem; [ -f $F/pvother ] && vg=other
    echo "  {\"report\": [{\"pv\": [{\"pv_name\":\"$last\", \"vg_name\":\"$vg\", \"pv_uuid\":\"wkWRFA\"}]}]}"
  else echo '  {"report":[{"pv":[]}]}'; echo "  Failed to find physical volume \"$last\"." >&2; exit 5; fi;;
lvchange)
  case $2 in
  --refresh) rm -f $F/suspended;;
  --activate)
    [ -f $F/vg ] || novg
    [ -f $F/lv ] || { echo "  Failed to find logical volume \"$last\"" >&2; exit 5; }
    [ -f $F/missing ] && { echo "  Refusing activation of partial LV $last.  Use '--activationmode partial' to override." >&2; exit 5; }
    touch $F/active; mknode;;
  *) echo "  fake lvchange: unexpected $2" >&2; exit 3;;
  esac;;
pvcreate) touch $F/pv; echo "  Physical volume \"$last\" successfully created.";;
vgcreate) touch $F/vg; echo '  Volume group "tandem" successfully created';;
lvcreate) touch $F/lv $F/active; mknode; echo '  Logical volume "data" created.';;
vgchange)
  [ -f $F/vg ] || novg
  if [ "$3" = y ]; then [ -f $F/lv ] && { touch $F/active; mknode; }; echo '  1 logical volume(s) in volume group "tandem" now active'
  else
    if [ -f $F/open ]; then echo '  Logical volume tandem/data in use.' >&2; echo "  Can't deactivate volume group \"tandem\" with 1 open logical volume(s)" >&2; exit 5; fi
    rm -f $F/active $F/dev/mapper/tandem-data; echo '  0 logical volume(s) in volume group "tandem" now active'
  fi;;
esac
`
	p := filepath.Join(f.dir, "lvm")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// lines lists the lvm command lines run, in order.
func (f *fake) lines() []string {
	b, _ := os.ReadFile(filepath.Join(f.dir, "calls"))
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// calls lists the lvm subcommands run, in order.
func (f *fake) calls() []string {
	var out []string
	for _, l := range f.lines() {
		out = append(out, strings.Fields(l)[0])
	}
	return out
}

func (f *fake) volume(create bool) *Volume {
	cfg := &site.Config{Storage: site.Storage{
		RAID: site.RAID{CreateIfBlank: create},
		LVM:  site.LVM{VG: "tandem", LV: "data", Size: "100%FREE"},
	}}
	c, err := FromSite(cfg, "head-a", f.pv)
	if err != nil {
		f.t.Fatal(err)
	}
	v, err := New(c, Options{SystemDir: filepath.Join(f.dir, "etc"), Lvm: f.script(), SysRoot: filepath.Join(f.dir, "sys"), DevDir: filepath.Join(f.dir, "dev"),
		Log: slog.New(slog.NewTextHandler(&f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func kindName(err error) string {
	if err == nil {
		return "ok"
	}
	return services.KindOf(err).String()
}

func TestStart(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(f *fake)
		create bool
		kind   string
		errHas string
		calls  []string
		logHas string
	}{
		{name: "fast path: existing LV activated with one lvm run", setup: func(f *fake) { f.touch("pv", "vg", "lv") }, kind: "ok",
			calls: []string{"lvchange"}, logHas: "activated existing logical volume (not created; fast path)"},
		{name: "fast path: no VG on a blank device, the careful path creates", create: true, kind: "ok",
			calls:  []string{"lvchange", "vgs", "pvs", "pvcreate", "vgcreate", "lvcreate", "vgs", "vgs", "lvs"},
			logHas: `msg="fast activation failed; taking the careful path" resource=lvm vg=tandem lv=data err="lvm lvchange`},
		{name: "fast path: no device node, the careful path runs", setup: func(f *fake) { f.touch("pv", "vg", "lv", "nonode") }, kind: "ok",
			calls: []string{"lvchange", "vgs", "lvs", "vgchange", "vgs", "lvs"}, logHas: "fast activation left no device node"},
		{name: "first activation on a blank device", create: true, kind: "ok",
			calls: []string{"lvchange", "vgs", "pvs", "pvcreate", "vgcreate", "lvcreate", "vgs", "vgs", "lvs"}},
		{name: "existing VG is activated, never created", create: true, setup: func(f *fake) { f.touch("pv", "vg", "lv") }, kind: "ok",
			calls: []string{"lvchange"}},
		{name: "already active", setup: func(f *fake) { f.touch("pv", "vg", "lv", "active") }, kind: "ok",
			calls: []string{"lvchange"}},
		{name: "blank without consent", kind: "refused", errHas: "is blank and storage.raid.create_if_blank is false",
			calls: []string{"lvchange", "vgs", "pvs"}},
		{name: "device holds xfs", create: true, setup: func(f *fake) {
			fh, _ := os.OpenFile(f.pv, os.O_WRONLY, 0)
			fh.WriteAt([]byte("XFSB"), 0)
			fh.Close()
		}, kind: "refused", errHas: "holds xfs signature", calls: []string{"lvchange", "vgs", "pvs"}},
		{name: "interrupted after pvcreate", create: true, setup: func(f *fake) { f.touch("pv") }, kind: "ok",
			calls: []string{"lvchange", "vgs", "pvs", "vgcreate", "lvcreate", "vgs", "vgs", "lvs"}},
		{name: "interrupted after vgcreate", create: true, setup: func(f *fake) { f.touch("pv", "vg") }, kind: "ok",
			calls: []string{"lvchange", "vgs", "lvs", "lvcreate", "vgchange"}},
		{name: "interrupted after vgcreate, without consent", setup: func(f *fake) { f.touch("pv", "vg") }, kind: "refused",
			errHas: "has no logical volume and storage.raid.create_if_blank is false", calls: []string{"lvchange", "vgs", "lvs"}},
		{name: "pv of another vg", create: true, setup: func(f *fake) { f.touch("pv", "pvother") }, kind: "refused",
			errHas: `is a PV of volume group "other", not "tandem"`, calls: []string{"lvchange", "vgs", "pvs"}},
		{name: "vg with other lvs", create: true, setup: func(f *fake) { f.touch("pv", "vg", "otherlv") }, kind: "refused",
			errHas: `has logical volumes scratch but not "data"`, calls: []string{"lvchange", "vgs", "lvs"}},
		{name: "pvcreate finds a signature itself", create: true, setup: func(f *fake) {
			os.WriteFile(filepath.Join(f.dir, "fail-pvcreate"), []byte("WARNING: xfs signature detected on /dev/drbd0 at offset 0. Wipe it? [y/n]: [n]\n  Aborted wiping of xfs.\n  1 existing signature left on the device.\n"), 0o644)
		}, kind: "refused", errHas: "Aborted wiping of xfs", calls: []string{"lvchange", "vgs", "pvs", "pvcreate"}},
		{name: "duplicate PV", setup: func(f *fake) {
			f.touch("pv", "vg", "lv")
			for _, cmd := range []string{"lvchange", "vgs"} {
				os.WriteFile(filepath.Join(f.dir, "fail-"+cmd), []byte("  WARNING: Not using device /dev/md127 for PV wkWRFA.\n  Cannot activate LVs in VG tandem while PVs appear on duplicate devices.\n"), 0o644)
			}
		}, kind: "failed", errHas: "duplicate PV", calls: []string{"lvchange", "vgs"}},
		{name: "drbd device absent", create: true, setup: func(f *fake) { os.Remove(f.pv) }, kind: "missing", errHas: "is DRBD up and primary?",
			calls: []string{"lvchange", "vgs", "pvs"}},
		{name: "vg incomplete: lvchange refuses, the careful path says why", setup: func(f *fake) { f.touch("pv", "vg", "lv", "missing") }, kind: "failed",
			errHas: "is incomplete (1 of 1 PVs missing", calls: []string{"lvchange", "vgs", "lvs"}, logHas: "partial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			v := f.volume(tt.create)
			err := v.Start(context.Background())
			if kindName(err) != tt.kind || !strings.Contains(fmt.Sprint(err), tt.errHas) {
				t.Fatalf("got %s: %v\nwant %s containing %q", kindName(err), err, tt.kind, tt.errHas)
			}
			if tt.calls != nil && !slices.Equal(f.calls(), tt.calls) {
				t.Errorf("calls %v\n want %v", f.calls(), tt.calls)
			}
			// The fast path activates our LV alone, by name.
			if l := f.lines(); len(l) == 0 || l[0] != "lvchange --activate y -- tandem/data" {
				t.Errorf("first lvm run %q, want the fast path's lvchange", l)
			}
			if !strings.Contains(f.logs.String(), tt.logHas) {
				t.Errorf("log lacks %q:\n%s", tt.logHas, f.logs.String())
			}
			if env, _ := os.ReadFile(filepath.Join(f.dir, "env")); len(f.calls()) > 0 && strings.TrimSpace(string(env)) != filepath.Join(f.dir, "etc")+" 1" {
				t.Errorf("env %q", env)
			}
			if _, err := os.Stat(v.ConfigPath()); err != nil {
				t.Errorf("config not written: %v", err)
			}
		})
	}
}

func TestStartTwice(t *testing.T) {
	f := newFake(t)
	v := f.volume(true)
	ctx := context.Background()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n := len(f.calls())
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.calls()[n:] {
		if strings.HasSuffix(c, "create") {
			t.Errorf("second start ran %s", c)
		}
	}
	if err := v.Monitor(ctx); err != nil {
		t.Error(err)
	}
}

func TestStopAndMonitor(t *testing.T) {
	ctx := context.Background()
	t.Run("stop then monitor fails", func(t *testing.T) {
		f := newFake(t)
		f.touch("pv", "vg", "lv", "active")
		v := f.volume(false)
		if err := v.Monitor(ctx); err != nil {
			t.Fatal(err)
		}
		if err := v.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := v.Stop(ctx); err != nil {
			t.Fatal("second stop:", err)
		}
		err := v.Monitor(ctx)
		if kindName(err) != "failed" || !strings.Contains(err.Error(), "tandem/data is not active") {
			t.Errorf("monitor after stop: %v", err)
		}
	})
	t.Run("busy", func(t *testing.T) {
		f := newFake(t)
		f.touch("pv", "vg", "lv", "active", "open")
		err := f.volume(false).Stop(ctx)
		if kindName(err) != "failed" || !errors.Is(err, services.ErrInUse) || !strings.Contains(err.Error(), "XFS still mounted?") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("vg gone, nothing mapped", func(t *testing.T) {
		f := newFake(t)
		if err := f.volume(false).Stop(ctx); err != nil {
			t.Errorf("got %v", err)
		}
	})
	t.Run("vg gone, mapping left", func(t *testing.T) {
		f := newFake(t)
		for dm, name := range map[string]string{"dm-0": "tandem-data", "dm-1": "tandem--x-data", "dm-2": "other-data"} {
			os.MkdirAll(filepath.Join(f.dir, "sys/block", dm, "dm"), 0o755)
			os.WriteFile(filepath.Join(f.dir, "sys/block", dm, "dm/name"), []byte(name+"\n"), 0o644)
		}
		err := f.volume(false).Stop(ctx)
		if kindName(err) != "failed" || !strings.HasSuffix(err.Error(), "device-mapper still has tandem-data") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("monitor without vg", func(t *testing.T) {
		f := newFake(t)
		err := f.volume(false).Monitor(ctx)
		if kindName(err) != "failed" || !errors.Is(err, services.ErrNotFound) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("suspended: resumed, still failed", func(t *testing.T) {
		f := newFake(t)
		f.touch("pv", "vg", "lv", "active", "suspended")
		v := f.volume(false)
		err := v.Monitor(ctx)
		if kindName(err) != "failed" || !errors.Is(err, ErrSuspended) || !strings.Contains(err.Error(), "resumed") {
			t.Fatalf("got %v", err)
		}
		if c := f.calls(); c[len(c)-1] != "lvchange" {
			t.Errorf("calls %v", c)
		}
		if err := v.Monitor(ctx); err != nil {
			t.Errorf("after the resume: %v", err)
		}
	})
	t.Run("suspended, resume fails", func(t *testing.T) {
		f := newFake(t)
		f.touch("pv", "vg", "lv", "active", "suspended")
		os.WriteFile(filepath.Join(f.dir, "fail-lvchange"), []byte("  device-mapper: resume ioctl on (253:0) failed: Invalid argument\n"), 0o644)
		err := f.volume(false).Monitor(ctx)
		if kindName(err) != "failed" || !strings.Contains(err.Error(), "resuming it failed") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("monitor timeout", func(t *testing.T) {
		f := newFake(t)
		f.touch("pv", "vg", "lv", "active")
		v := f.volume(false)
		os.WriteFile(v.lvm.Path, []byte("#!/bin/sh\nexec sleep 10\n"), 0o755)
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := v.Monitor(ctx)
		if kindName(err) != "timeout" || time.Since(start) > 5*time.Second {
			t.Errorf("got %v after %s", err, time.Since(start))
		}
	})
}

func TestDevice(t *testing.T) {
	tests := []struct{ vg, lv, dm string }{
		{"tandem", "data", "tandem-data"},
		{"my-vg", "the-lv", "my--vg-the--lv"},
	}
	for _, tt := range tests {
		cfg := &site.Config{Storage: site.Storage{LVM: site.LVM{VG: tt.vg, LV: tt.lv}, DRBD: site.DRBD{Minor: 3}}}
		c, err := FromSite(cfg, "head-a", "")
		if err != nil {
			t.Fatal(err)
		}
		v, err := New(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if v.DMName() != tt.dm || v.Device() != "/dev/mapper/"+tt.dm || v.PV() != "/dev/drbd3" || v.ConfigPath() != "/run/tandem/lvm/lvm.conf" {
			t.Errorf("%s/%s: dm %s device %s pv %s", tt.vg, tt.lv, v.DMName(), v.Device(), v.PV())
		}
	}
	if _, err := FromSite(&site.Config{Storage: site.Storage{LVM: site.LVM{VG: "-x"}}}, "head-a", ""); services.KindOf(err) != services.Config {
		t.Errorf("bad name: %v", err)
	}
}
