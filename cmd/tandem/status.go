package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"tandem.dev/tandem/status"
)

// runStatus prints PID 1's view of this node (run it on the node).
func runStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the raw JSON")
	sock := fs.String("socket", status.Socket, "PID 1's status socket")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Errorf("usage: tandem status [--json]")}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := status.Call(ctx, *sock, status.OpStatus)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(resp.Status)
	}
	return status.Format(os.Stdout, resp.Status)
}

// runPoweroff and runReboot ask PID 1 to stop the services top-down,
// unmount and power off or reboot.
func runPoweroff(ctx context.Context, args []string) error {
	return shutdownCmd(ctx, status.OpPoweroff, args)
}
func runReboot(ctx context.Context, args []string) error {
	return shutdownCmd(ctx, status.OpReboot, args)
}

func shutdownCmd(ctx context.Context, op string, args []string) error {
	fs := flag.NewFlagSet(op, flag.ContinueOnError)
	sock := fs.String("socket", status.Socket, "PID 1's status socket")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Errorf("usage: tandem %s", op)}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := status.Call(ctx, *sock, op); err != nil {
		return err
	}
	fmt.Printf("%s: requested; services stop top-down on the console\n", op)
	return nil
}
