package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"tandem.dev/tandem/ha/witness"
	pid1 "tandem.dev/tandem/init"
	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/site"
)

// errWitnessPairKey answers the flags that used to hand the witness host
// the pair key.
var errWitnessPairKey = errors.New("tandem witness no longer reads the pair key: the witness host holds only the witness key. " +
	"On a head or the build host run: tandem witness-key --site site.toml -o witness.toml; copy witness.toml (mode 0600) here, " +
	"then: tandem witness --config witness.toml (with --init on its first start)")

// runWitness serves the pair's tiebreaker vote on a third host (never on
// one of the heads): it leases its one vote to one head at a time. It
// reads the witness config `tandem witness-key` made, which holds the
// witness key but not the pair key. It persists only the writer marker
// (--state), which --init creates once; leases are not persisted, so
// after a start it grants nobody new for one lease (see ha/witness and
// docs/ha.md).
func runWitness(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("witness", flag.ContinueOnError)
	config := fs.String("config", "", "the witness config tandem witness-key made: pair, nodes, lease, port and the witness key")
	listen := fs.String("listen", "", "UDP address to serve on (default: all addresses, the config's port)")
	lease := fs.Duration("lease", 0, "how long one grant of the vote lasts (default: the config's lease_ms)")
	quiet := fs.Duration("quiet", 0, "grant nobody new this long after start (default: the lease; raise it if a previous run used a longer lease)")
	state := fs.String("state", "", "file keeping the writer marker (default: "+witness.DefaultStateDir+"/PAIR.json)")
	initState := fs.Bool("init", false, "first start only: create the state file (refused if it exists); without it a missing state file is an error")
	forget := fs.Bool("forget-writer", false, "operator override: clear a recorded writer marker at start; the writer's unreplicated writes may be lost if the other head is made active")
	verbose := fs.Bool("v", false, "log every renewal")
	var pairKeyFlag bool
	for _, name := range []string{"site", "key-file", "pair"} {
		fs.Func(name, "refused: the witness host must not hold the pair key (see tandem witness-key)", func(string) error {
			pairKeyFlag = true
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if pairKeyFlag {
		return usageError{errWitnessPairKey}
	}
	usage := errors.New("usage: tandem witness --config witness.toml [--init] [--listen ADDR] [--lease 9s] [--quiet 9s] [--state FILE] [--forget-writer] [-v]")
	if fs.NArg() > 0 || *config == "" || *lease < 0 || *quiet < 0 {
		return usageError{usage}
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg, port, err := witness.LoadFile(*config)
	if err != nil {
		return err
	}
	if st, err := os.Stat(*config); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("witness: the config holds the witness key and others may read it; chmod 600 it", "file", *config, "mode", st.Mode().Perm())
	}
	if *lease > 0 {
		cfg.Lease = *lease
	}
	cfg.Quiet = *quiet
	cfg.ForgetWriter = *forget
	cfg.InitState = *initState
	if cfg.StateFile = *state; cfg.StateFile == "" {
		if cfg.StateFile, err = witness.DefaultStateFile(cfg.Pair); err != nil {
			return usageError{fmt.Errorf("--state: %w", err)}
		}
	}
	if *initState {
		if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o700); err != nil {
			return fmt.Errorf("witness state: %w", err)
		}
	}
	addr := *listen
	if addr == "" {
		addr = net.JoinHostPort("", strconv.Itoa(port))
	}
	cfg.Log = log
	if cfg.Lease > 0 && cfg.Lease < time.Second {
		cfg.Log.Warn("witness: a lease under a second leaves the active head little room to renew", "lease", cfg.Lease)
	}
	return witness.ListenAndServe(ctx, addr, cfg)
}

// runWitnessKey writes the witness host's config: run on a head or the
// build host, where the site config and the pair key are; the file holds
// the witness key only.
func runWitnessKey(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("witness-key", flag.ContinueOnError)
	sitePath := fs.String("site", pid1.SiteState, "the pair's site.toml")
	keyFile := fs.String("key-file", "", "file holding the pair key, hex or base64 (when the site config's key_file is a path on the heads only)")
	out := fs.String("o", "", "write the config to this file, mode 0600 (default: standard output)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{errors.New("usage: tandem witness-key [--site site.toml] [--key-file F] [-o witness.toml]")}
	}
	return witnessKey(os.Stdout, *sitePath, *keyFile, *out)
}

func witnessKey(stdout io.Writer, sitePath, keyFile, out string) error {
	sc, err := site.Load(sitePath)
	if err != nil {
		return err
	}
	if sc.Witness.Address == "" {
		return fmt.Errorf("%s: no witness.address: this pair has no witness (a ping target needs no key)", sitePath)
	}
	cfg, port, err := witness.FromSite(sc, keyFile)
	if err != nil {
		return err
	}
	b, err := witness.File(cfg, port)
	if err != nil {
		return err
	}
	if out == "" {
		_, err = stdout.Write(b)
		return err
	}
	if err := atomicfile.Write(out, b, 0o600); err != nil {
		return fmt.Errorf("witness config: %w", err)
	}
	return nil
}
