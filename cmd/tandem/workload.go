package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"tandem.dev/tandem/qemu/workload"
)

// runWorkload writes and verifies checksummed records through a mount
// (the lab client's view of a failover). Exit status 1 when anything was
// lost, corrupt or failed.
func runWorkload(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("workload", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory on the mount under test (required)")
	dur := fs.Duration("duration", 30*time.Second, "how long to write")
	size := fs.Int("record-size", 4096, "bytes per record")
	interval := fs.Duration("interval", 0, "pause between records (0: back to back)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	stall := fs.Duration("stall-threshold", 500*time.Millisecond, "list every gap between two acknowledged records above this")
	verify := fs.String("verify", "", "only verify FILE, written by an earlier run (e.g. after a reboot of the heads)")
	acked := fs.Int64("acked", 0, "with --verify: the records that run acknowledged")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *verify != "" {
		lost, corrupt, err := workload.VerifyFile(*verify, *acked, *size)
		if err != nil {
			return err
		}
		fmt.Printf("%s: %d records checked, %d lost, %d corrupt\n", *verify, *acked, lost, corrupt)
		if lost+corrupt > 0 {
			return fmt.Errorf("%d lost, %d corrupt records", lost, corrupt)
		}
		return nil
	}
	if *dir == "" || fs.NArg() > 0 {
		return usageError{errors.New("usage: tandem workload --dir DIR [--duration 30s] [--record-size 4096] [--json]")}
	}
	r, err := workload.Run(ctx, workload.Options{
		Dir: *dir, Duration: *dur, RecordSize: *size, Interval: *interval, StallThreshold: *stall,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	if *asJSON {
		if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
			return err
		}
	} else {
		fmt.Println(r)
		if r.FirstError != "" {
			fmt.Println("first error:", r.FirstError)
		}
	}
	if !r.Clean() {
		return fmt.Errorf("%d I/O errors, %d lost, %d corrupt records", r.IOErrors, r.Lost, r.Corrupt)
	}
	return nil
}
