package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The CLI reports spec and site errors with file:line:col and writes no image.
func TestBuildAndValidateErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out := filepath.Join(dir, "out.img")
	tests := []struct {
		name string
		cmd  func() error
		want string
	}{
		{"spec syntax", func() error {
			return runBuild(context.Background(), []string{"--spec", write("a.toml", "name = \"x\nboard = 1\n"), "--output", out})
		}, "a.toml:1:10: "},
		{"spec unknown key", func() error {
			return runBuild(context.Background(), []string{"--spec", write("b.toml", "name = \"x\"\ncolour = \"red\"\n"), "--output", out})
		}, "b.toml:2:1: colour: unknown key"},
		{"missing spec", func() error {
			return runBuild(context.Background(), []string{"--spec", filepath.Join(dir, "none.toml"), "--output", out})
		}, "none.toml: no such file"},
		{"site syntax", func() error {
			return runValidate(context.Background(), []string{write("site.toml", "version = 1\n[pair\n")})
		}, "site.toml:2:"},
		{"bad flag", func() error { return runBuild(context.Background(), []string{"--nope"}) }, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cmd()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Errorf("an image was written despite the error")
			}
		})
	}
}

// validate builds each head's real graph and prints its start order.
func TestValidateExamples(t *testing.T) {
	for _, f := range []string{"../../configs/site.example.toml", "../../configs/site.lab.toml"} {
		var out strings.Builder
		if err := validate(&out, f, defaultBoard); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, want := range []string{
			"start order, active:  mgmt → bond → raid10 → drbd → drbd-primary → lvm → xfs → nfs → vip\n",
			"start order, standby: mgmt → bond → raid10 → drbd\n",
		} {
			if strings.Count(out.String(), want) != 2 {
				t.Errorf("%s: want %q once per head in:\n%s", f, want, out.String())
			}
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	if code := run(context.Background(), []string{"frobnicate"}); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
}

// The mode commands check their words before they reach PID 1, and tell
// what they need when PID 1 does not answer.
func TestModeCommands(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		name string
		run  func(context.Context, []string) error
		args []string
		want string
	}{
		{"no word", runStandby, nil, "usage: tandem standby [--force] on|off"},
		{"wrong word", runMaintenance, []string{"maybe"}, "usage: tandem maintenance on|off"},
		{"maintenance has no force", runMaintenance, []string{"--force", "on"}, "flag provided but not defined: -force"},
		{"no PID 1", runStandby, []string{"--socket", sock, "--force", "on"}, "connect to PID 1"},
		{"no PID 1, off", runMaintenance, []string{"--socket", sock, "off"}, "connect to PID 1"},
		{"cleanup of two layers", runCleanup, []string{"nfs", "vip"}, "usage: tandem cleanup [LAYER]"},
		{"cleanup, no PID 1", runCleanup, []string{"--socket", sock, "nfs"}, "connect to PID 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(context.Background(), tt.args); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}
