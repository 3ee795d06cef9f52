package qemu

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/internal/labagent"
	"tandem.dev/tandem/site"
)

// defaultClientAddr is the client's address on the service network when
// the site config names no witness to put there.
var defaultClientAddr = netip.MustParsePrefix("10.0.0.2/24")

// Where the witness lives on the client: its config (tandem witness-key's
// file: the witness key, never the pair key), log and pid. Its state
// file is the default, /var/lib/tandem/witness/PAIR.json.
const (
	WitnessConfig = "/tmp/witness.toml"
	WitnessLog    = "/tmp/witness.log"
	WitnessPID    = "/tmp/witness.pid"
)

// witnessStart bounds the witness's start: it serves within a second or
// two under TCG.
const witnessStart = 30 * time.Second

// ClientPlan is how the full lab's client is set up; PlanClient derives
// it from the site config the heads boot with.
type ClientPlan struct {
	// Addr is the client's address on the service network: the witness's
	// host, so that the heads find their witness there.
	Addr netip.Prefix
	// Witness, when set, is the witness config (as tandem witness-key
	// writes it) `tandem witness --config` serves on the client; nil runs
	// no witness.
	Witness []byte
	// Export is the first NFS export through the VIP (10.0.0.10:/srv/...);
	// "" when the site has no VIP or no export.
	Export string
}

// PlanClient derives the client's setup from the heads' site config
// (nil: no site, only the client's address). The witness runs on the
// client when [witness] address names it; the prefix length is that of
// the management network it lies in. The witness config is made here, on
// the host, so the client never sees the pair key.
func PlanClient(siteTOML []byte) (ClientPlan, error) {
	p := ClientPlan{Addr: defaultClientAddr}
	if siteTOML == nil {
		return p, nil
	}
	sc, err := site.Parse("site.toml", siteTOML)
	if err != nil {
		return p, fmt.Errorf("qemu: client plan: %w", err)
	}
	if sc.Witness.Address != "" {
		ap, err := netip.ParseAddrPort(sc.Witness.Address)
		if err != nil {
			return p, fmt.Errorf("qemu: client plan: witness address: %w", err)
		}
		bits := defaultClientAddr.Bits()
		for _, n := range sc.Nodes {
			if m := n.Management.Prefix(); m.IsValid() && m.Contains(ap.Addr()) {
				bits = m.Bits()
				break
			}
		}
		wc, port, err := witness.FromSite(sc, "")
		if err == nil {
			p.Witness, err = witness.File(wc, port)
		}
		if err != nil {
			return p, fmt.Errorf("qemu: client plan: witness config: %w", err)
		}
		p.Addr = netip.PrefixFrom(ap.Addr(), bits)
	}
	if vip := sc.VIP.Prefix(); vip.IsValid() && sc.Services.NFS.Enabled && len(sc.Services.NFS.Exports) > 0 {
		p.Export = vip.Addr().String() + ":" + sc.Services.NFS.Exports[0].Path
	}
	return p, nil
}

// MountNFSv3 is the client's command that mounts the export hard over
// NFSv3 on dir, as the scenarios' clients do; nil without an Export.
func (p ClientPlan) MountNFSv3(dir string) []string {
	if p.Export == "" {
		return nil
	}
	return []string{"mount.nfs", p.Export, dir, "-o", "vers=3,hard,proto=tcp,nolock"}
}

// SetUpClient readies the full lab's client, where every HA scenario
// starts from:
//   - ClientUp: its address on the service network;
//   - StartWitness, when the plan has a witness config: the witness.
func (l *Lab) SetUpClient(ctx context.Context, p ClientPlan) error {
	if err := l.ClientUp(ctx, p.Addr); err != nil {
		return err
	}
	if p.Witness == nil {
		return nil
	}
	return l.StartWitness(ctx, p.Witness)
}

// ClientUp waits for the client's agent, then brings lo up and gives the
// client's management NIC addr. Its interface is found by MAC: the lab's
// MACs are stable, guest interface names are not.
func (l *Lab) ClientUp(ctx context.Context, addr netip.Prefix) error {
	client := l.VM("client")
	if client == nil {
		return fmt.Errorf("qemu: lab %s has no client", l.Topology)
	}
	if err := client.WaitAgentPort(ctx); err != nil {
		return err
	}
	var mac string
	for _, v := range l.State().VMs {
		for _, n := range v.NICs {
			if v.Name == client.Name && n.ID == "mgmt" {
				mac = n.MAC
			}
		}
	}
	out, err := client.guest(ctx, labagent.Request{Argv: []string{"busybox", "sh", "-c",
		`for i in /sys/class/net/*; do [ "$(busybox cat $i/address 2>/dev/null)" = "$0" ] && echo ${i##*/}; done; true`, mac}})
	if err != nil {
		return fmt.Errorf("qemu: client up: %w", err)
	}
	nic := strings.TrimSpace(string(out))
	if nic == "" {
		return fmt.Errorf("qemu: client up: no interface with MAC %s", mac)
	}
	for _, argv := range [][]string{
		{"ip", "link", "set", "dev", "lo", "up"},
		{"ip", "addr", "add", addr.String(), "dev", nic},
		{"ip", "link", "set", "dev", nic, "up"},
	} {
		if _, err := client.guest(ctx, labagent.Request{Argv: argv}); err != nil {
			return fmt.Errorf("qemu: client up: %w", err)
		}
	}
	l.log.Info("client up", "addr", addr, "dev", nic)
	return nil
}

// StartWitness puts the witness config on the witness's host
// (Lab.Witness) and runs `tandem witness --init` there in the background,
// logging to WitnessLog: the first start of a new witness, which creates
// its state file. It returns once the witness serves.
func (l *Lab) StartWitness(ctx context.Context, config []byte) error {
	vm := l.VM(l.Witness)
	if vm == nil {
		return fmt.Errorf("qemu: lab %s has no witness host", l.Topology)
	}
	if _, err := vm.guest(ctx, labagent.Request{Argv: []string{"busybox", "sh", "-c", "umask 077 && busybox cat > " + WitnessConfig}, Stdin: config}); err != nil {
		return fmt.Errorf("qemu: witness: writing its config: %w", err)
	}
	return l.runWitness(ctx, vm, true)
}

// RestartWitness stops the witness (SIGTERM, as a service manager would)
// and starts it again on the same state file, without --init: a restart
// must keep the witness's record of which head alone has current data.
// It returns once the new run serves.
func (l *Lab) RestartWitness(ctx context.Context) error {
	vm := l.VM(l.Witness)
	if vm == nil {
		return fmt.Errorf("qemu: lab %s has no witness host", l.Topology)
	}
	// kill -0 polls until the old run has gone: a new one could not bind
	// the port before.
	if _, err := vm.guest(ctx, labagent.Request{Argv: []string{"busybox", "sh", "-c",
		`p=$(busybox cat ` + WitnessPID + `) && busybox kill $p || exit 1; i=0; while [ $i -lt 30 ]; do busybox kill -0 $p 2>/dev/null || exit 0; busybox sleep 1; i=$((i+1)); done; exit 1`}}); err != nil {
		return fmt.Errorf("qemu: witness: stopping it: %w", err)
	}
	return l.runWitness(ctx, vm, false)
}

// runWitness starts tandem witness from WitnessConfig in the background,
// appending to WitnessLog, and waits for this run's "serving" line.
func (l *Lab) runWitness(ctx context.Context, vm *VM, init bool) error {
	serving := []byte("witness: serving")
	before := 0
	if out, err := vm.guest(ctx, labagent.Request{Argv: []string{"busybox", "sh", "-c", "busybox cat " + WitnessLog + " 2>/dev/null; true"}}); err == nil {
		before = bytes.Count(out, serving)
	}
	cmd := "tandem witness --config " + WitnessConfig
	if init {
		cmd += " --init"
	}
	// Nothing in the background may keep the agent's pipes open, or the
	// command would not end.
	if _, err := vm.guest(ctx, labagent.Request{Argv: []string{"busybox", "sh", "-c",
		"(" + cmd + " >> " + WitnessLog + " 2>&1 < /dev/null & echo $! > " + WitnessPID + ") > /dev/null 2>&1"}}); err != nil {
		return fmt.Errorf("qemu: witness: %w", err)
	}
	deadline := time.Now().Add(witnessStart)
	for {
		out, err := vm.guest(ctx, labagent.Request{Argv: []string{"busybox", "cat", WitnessLog}})
		if err == nil && bytes.Count(out, serving) > before {
			l.log.Info("witness serving", "vm", vm.Name, "init", init)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("qemu: the witness did not start on %s within %v: %v %s", vm.Name, witnessStart, err, out)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu: witness: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// guest runs a command in the VM through its agent, allowing it 30 s, and
// returns its stdout; a non-zero exit is an error with its stderr.
func (vm *VM) guest(ctx context.Context, req labagent.Request) ([]byte, error) {
	a := vm.Agent()
	if a == nil {
		return nil, fmt.Errorf("qemu %s: no agent channel", vm.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := a.Do(ctx, req)
	what := strings.Join(req.Argv, " ")
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", vm.Name, what, err)
	}
	if res.Exit != 0 {
		return res.Stdout, fmt.Errorf("%s: %s: exit %d: %s", vm.Name, what, res.Exit, bytes.TrimSpace(res.Stderr))
	}
	return res.Stdout, nil
}
