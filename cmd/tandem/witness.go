package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/site"
)

// runWitness serves the pair's tiebreaker vote on a third host (never on
// one of the heads): it leases its one vote to one head at a time. It
// persists only the writer marker (--state): leases are not persisted, so
// after a start it grants nobody new for one lease (see ha/witness and
// docs/ha.md).
func runWitness(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("witness", flag.ContinueOnError)
	listen := fs.String("listen", "", "UDP address to serve on (default: all addresses, the port of witness.address in --site, else 7791)")
	sitePath := fs.String("site", "", "the pair's site.toml: pair name, key, node names and default lease")
	keyFile := fs.String("key-file", "", "file holding the pair key, hex or base64 (instead of the site config's key)")
	pair := fs.String("pair", "", "pair name (needed without --site)")
	lease := fs.Duration("lease", 0, "how long one grant of the vote lasts (default: ha.dead_time_ms with --site, else 3s)")
	quiet := fs.Duration("quiet", 0, "grant nobody new this long after start (default: the lease; raise it if a previous run used a longer lease)")
	state := fs.String("state", "", "file keeping the writer marker (default: "+witness.DefaultStateDir+"/PAIR.json)")
	forget := fs.Bool("forget-writer", false, "operator override: clear a recorded writer marker at start; the writer's unreplicated writes may be lost if the other head is made active")
	verbose := fs.Bool("v", false, "log every renewal")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	usage := errors.New("usage: tandem witness [--listen ADDR] (--site site.toml [--key-file F] | --pair NAME --key-file F) [--lease 9s] [--state FILE] [--forget-writer]")
	if fs.NArg() > 0 || (*sitePath == "" && (*pair == "" || *keyFile == "")) || *lease < 0 || *quiet < 0 {
		return usageError{usage}
	}

	var cfg witness.Config
	port := witness.DefaultPort
	if *sitePath != "" {
		sc, err := site.Load(*sitePath)
		if err != nil {
			return err
		}
		if cfg, port, err = witness.FromSite(sc, *keyFile); err != nil {
			return err
		}
		if *pair != "" && *pair != cfg.Pair {
			return usageError{fmt.Errorf("--pair %q differs from the site config's pair %q", *pair, cfg.Pair)}
		}
	} else {
		key, err := site.ReadKeyFile(*keyFile)
		if err != nil {
			return err
		}
		cfg = witness.Config{Pair: *pair, Key: key}
	}
	if *lease > 0 {
		cfg.Lease = *lease
	}
	cfg.Quiet = *quiet
	cfg.ForgetWriter = *forget
	if cfg.StateFile = *state; cfg.StateFile == "" {
		var err error
		if cfg.StateFile, err = witness.DefaultStateFile(cfg.Pair); err != nil {
			return usageError{fmt.Errorf("--state: %w", err)}
		}
	}
	if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o700); err != nil {
		return fmt.Errorf("witness state: %w", err)
	}
	addr := *listen
	if addr == "" {
		addr = net.JoinHostPort("", strconv.Itoa(port))
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if cfg.Lease > 0 && cfg.Lease < time.Second {
		cfg.Log.Warn("witness: a lease under a second leaves the active head little room to renew", "lease", cfg.Lease)
	}
	return witness.ListenAndServe(ctx, addr, cfg)
}
