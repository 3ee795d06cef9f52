// Command tandem is Tandem's one binary: the build-host CLI and, when the
// kernel starts it as PID 1, the appliance's init.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	pid1 "tandem.dev/tandem/init"
)

// benchStamp lets scripts/bench-build change the binary without editing code.
var benchStamp string

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

var commands = []command{
	{"build", "build a flashable image from an image spec", runBuild},
	{"boot", "boot an image in QEMU with its console on this terminal", runBoot},
	{"lab", "boot a QEMU lab (node, pair, full) and inject faults into it", runLab},
	{"validate", "check a site.toml", runValidate},
	{"pair", "pair two unconfigured heads and give them a site.toml (the first-boot wizard, from a terminal)", runPair},
	{"status", "show this node's state and services (on a node)", runStatus},
	{"poweroff", "stop the services top-down and power this node off", runPoweroff},
	{"reboot", "stop the services top-down and reboot this node", runReboot},
	{"switchover", "move the active role to the other head (on a node)", runSwitchover},
	{"standby", "on|off: this head hands the service over and never takes it (on a node)", runStandby},
	{"maintenance", "on|off: monitor only; nothing restarted, moved or started (on a node)", runMaintenance},
	{"cleanup", "[LAYER]: forget a layer's failures and escalation once fixed (on a node)", runCleanup},
	{"drbd-fence-peer", "DRBD's fence-peer handler (run by DRBD, not by hand)", runDRBDHandler(false)},
	{"drbd-unfence-peer", "DRBD's after-resync-target handler (run by DRBD)", runDRBDHandler(true)},
	{"linktest", "measure TCP throughput between two hosts (e.g. the replication link)", runLinktest},
	{"workload", "write and verify checksummed records through a mount (lab client)", runWorkload},
	{"guess-codes", "try random setup codes against a head's wizard, as an attacker would (lab client)", runGuessCodes},
	{"relay-pairing", "relay and alter two heads' pairing as a man in the middle would (lab attacker)", runRelayPairing},
	{"witness", "serve the pair's tiebreaker vote (on a third host)", runWitness},
	{"witness-key", "write the witness host's config: the witness key, never the pair key", runWitnessKey},
	{"version", "print the version", runVersion},
}

func main() {
	if os.Getpid() == 1 {
		runPID1() // never returns
	}
	if pid1.IsModprobe(os.Args[0]) { // the kernel loading a module on demand
		os.Exit(pid1.Modprobe(os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			if err := c.run(ctx, args[1:]); err != nil {
				fmt.Fprintf(os.Stderr, "tandem %s: %v\n", c.name, err)
				if _, ok := err.(usageError); ok {
					return 2
				}
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(os.Stderr, "tandem: unknown command %q\n\n", args[0])
	usage()
	return 2
}

// usageError marks a mistake in the command line itself (exit status 2).
type usageError struct{ error }

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tandem <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'tandem <command> -h' for a command's flags.")
}
