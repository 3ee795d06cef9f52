package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"tandem.dev/tandem/status"
)

// runMaintenance switches this head's HA maintenance mode: monitors keep
// reporting, but nothing is restarted, moved or started. The mode
// survives a reboot until it is switched off.
func runMaintenance(ctx context.Context, args []string) error {
	return runMode(ctx, "maintenance", args, status.OpMaintenanceOn, status.OpMaintenanceOff, false)
}

// runStandby switches node standby: the head hands the service over to
// its peer and never takes it while standby is on.
func runStandby(ctx context.Context, args []string) error {
	return runMode(ctx, "standby", args, status.OpStandbyOn, status.OpStandbyOff, true)
}

func runMode(ctx context.Context, name string, args []string, onOp, offOp string, canForce bool) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	sock := fs.String("socket", status.Socket, "PID 1's status socket")
	var force *bool
	if canForce {
		force = fs.Bool("force", false, "go into standby even when the peer cannot take the service over (the service stops)")
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	usage := fmt.Errorf("usage: tandem %s on|off", name)
	if canForce {
		usage = fmt.Errorf("usage: tandem %s [--force] on|off", name)
	}
	if fs.NArg() != 1 {
		return usageError{usage}
	}
	req := status.Request{}
	switch fs.Arg(0) {
	case "on":
		req.Op = onOp
	case "off":
		req.Op = offOp
	default:
		return usageError{usage}
	}
	if force != nil {
		req.Force = *force
	}
	ctx, cancel := context.WithTimeout(ctx, status.SwitchoverBudget+10*time.Second)
	defer cancel()
	if req.Op == status.OpStandbyOn {
		fmt.Fprintln(os.Stderr, "standby: handing the service to the peer if this head has it; this takes a few seconds")
	}
	resp, err := status.Send(ctx, *sock, req)
	if err != nil {
		return err
	}
	fmt.Println(resp.Message)
	return nil
}

// runCleanup forgets a layer's failures and escalation on this head, once
// the operator has fixed the cause: the head may serve it again.
func runCleanup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	sock := fs.String("socket", status.Socket, "PID 1's status socket")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 1 {
		return usageError{fmt.Errorf("usage: tandem cleanup [LAYER]   (a layer of tandem status; none: every layer)")}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := status.Send(ctx, *sock, status.Request{Op: status.OpCleanup, Layer: fs.Arg(0)})
	if err != nil {
		return err
	}
	fmt.Println(resp.Message)
	return nil
}
