package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/site"
)

const labSite = "../../configs/site.lab.toml"

// freeUDP is a loopback UDP address nobody listens on right now.
func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// tandem witness-key's file runs a witness that a head, set up from the
// site config and pair key as the supervisor does, gets the vote from;
// the state file is created by --init only, once, and a restart without
// --init keeps it.
func TestWitnessKeyRunsAWitness(t *testing.T) {
	dir := t.TempDir()
	conf, state := filepath.Join(dir, "witness.toml"), filepath.Join(dir, "state", "lab.json")
	if err := witnessKey(nil, labSite, "", conf); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if err := witnessKey(&stdout, labSite, "", ""); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(conf)
	st, _ := os.Stat(conf)
	if err != nil || st.Mode().Perm() != 0o600 || !bytes.Equal(b, stdout.Bytes()) {
		t.Fatalf("witness.toml: mode %v, %v; same as stdout: %v", st.Mode().Perm(), err, bytes.Equal(b, stdout.Bytes()))
	}
	lab, err := site.Load(labSite)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(string(b)), strings.ToLower(lab.Pair.Key)) {
		t.Fatalf("witness.toml holds the pair key:\n%s", b)
	}
	pairKey, _ := lab.PairKey()

	addr := freeUDP(t)
	serve := func(ctx context.Context, extra ...string) error {
		return runWitness(ctx, append([]string{"--config", conf, "--listen", addr, "--state", state, "--lease", "1s"}, extra...))
	}
	// No state file and no --init: refused at once, nothing created.
	if err := serve(context.Background()); err == nil || !strings.Contains(err.Error(), "tandem witness --init") {
		t.Errorf("first start without --init: %v", err)
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("the refused start created %s", state)
	}

	// --init: serves, and the head is granted the vote after the quiet
	// period.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, "--init") }()
	cc, err := witness.ClientFromSite(lab, "head-a", pairKey)
	if err != nil {
		t.Fatal(err)
	}
	cc.Addr, cc.Retry = addr, 50*time.Millisecond
	head, err := witness.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer head.Close()
	granted := false
	for deadline := time.Now().Add(15 * time.Second); !granted && time.Now().Before(deadline); {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		granted, _, _, _ = head.Request(rctx)
		rcancel()
		if !granted {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if !granted {
		t.Errorf("head-a was never granted the vote by the witness run from tandem witness-key's file")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("witness --init: %v", err)
	}
	before, err := os.ReadFile(state)
	if err != nil {
		t.Fatalf("--init left no state file: %v", err)
	}

	// --init again: refused, the file untouched. A restart without it
	// serves.
	if err := serve(context.Background(), "--init"); err == nil || !strings.Contains(err.Error(), "only once") {
		t.Errorf("a second --init: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := serve(ctx); err != nil {
		t.Errorf("restart without --init: %v", err)
	}
	if after, _ := os.ReadFile(state); !bytes.Equal(before, after) {
		t.Errorf("state file changed: %s -> %s", before, after)
	}
}

// The witness host is never handed the pair key: the flags that did so
// are refused with the way to do it now.
func TestWitnessRefusesThePairKey(t *testing.T) {
	for _, args := range [][]string{
		{"--site", labSite},
		{"--site", labSite, "--key-file", "pair.key"},
		{"--pair", "lab", "--key-file", "pair.key"},
	} {
		err := runWitness(context.Background(), args)
		var u usageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), "tandem witness-key") {
			t.Errorf("%q: %v", args, err)
		}
	}
	// witness-key on a build host without the heads' key file says how.
	if err := witnessKey(nil, "../../configs/site.example.toml", "", filepath.Join(t.TempDir(), "w.toml")); err == nil || !strings.Contains(err.Error(), "--key-file") {
		t.Errorf("example without --key-file: %v", err)
	}
}
