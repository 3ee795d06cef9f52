package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/status"
)

// runSwitchover asks PID 1 to move the active role to the other head:
// the active head stops its stack top-down, the other starts it
// bottom-up. Run it on either head.
func runSwitchover(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("switchover", flag.ContinueOnError)
	sock := fs.String("socket", status.Socket, "PID 1's status socket")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Errorf("usage: tandem switchover")}
	}
	ctx, cancel := context.WithTimeout(ctx, status.SwitchoverBudget+10*time.Second)
	defer cancel()
	fmt.Fprintln(os.Stderr, "switchover: stopping the stack on the active head, then starting it on the other; this takes a few seconds")
	resp, err := status.Call(ctx, *sock, status.OpSwitchover)
	if err != nil {
		return err
	}
	fmt.Println(resp.Message)
	return nil
}

// fenceAskBudget bounds the fence-peer handler's question to PID 1 (one
// witness exchange with its retries).
const fenceAskBudget = 5 * time.Second

// runDRBDHandler is what DRBD's fence-peer and after-resync-target
// handlers run (see services/drbd/fence.go): the answer is the exit code.
func runDRBDHandler(unfence bool) func(ctx context.Context, args []string) error {
	return func(ctx context.Context, args []string) error {
		h := drbd.DefaultHandler(nil)
		// I/O stays frozen while this runs: ask briefly, and refuse
		// (frozen) rather than wait; PID 1 retries on its own.
		h.Ask = func(ctx context.Context) (string, error) {
			ctx, cancel := context.WithTimeout(ctx, fenceAskBudget)
			defer cancel()
			resp, err := status.Call(ctx, status.Socket, status.OpFencePeer)
			if err != nil {
				return "", err
			}
			if !resp.OK {
				return "", errors.New(resp.Error)
			}
			return resp.Message, nil
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if unfence {
			os.Exit(h.UnfencePeer(ctx))
		}
		os.Exit(h.FencePeer(ctx))
		return nil
	}
}
