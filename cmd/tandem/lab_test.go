package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/wizard"
)

func TestParseLabFlags(t *testing.T) {
	tests := []struct {
		name    string
		topo    qemu.Topology
		args    []string
		euid    int
		wantErr string // "" when accepted
		usage   bool   // the error is a usage error
		want    labOptions
	}{
		{name: "defaults", topo: qemu.Pair, euid: 1000,
			want: labOptions{image: "out/tandem.img", name: "pair", mem: 1024}},
		{name: "a site", topo: qemu.Pair, args: []string{"--site", "s.toml", "--host-nic"}, euid: 0,
			want: labOptions{image: "out/tandem.img", sitePath: "s.toml", name: "pair", mem: 1024, hostNIC: true}},
		{name: "unconfigured implies the host port", topo: qemu.Pair, args: []string{"--unconfigured", "--image", "/tmp/x.img"}, euid: 0,
			want: labOptions{image: "/tmp/x.img", name: "pair", mem: 1024, hostNIC: true, unconfigured: true}},
		{name: "unconfigured full", topo: qemu.Full, args: []string{"--unconfigured", "--name", "w"}, euid: 0,
			want: labOptions{image: "out/tandem.img", name: "w", mem: 1024, hostNIC: true, unconfigured: true}},
		{name: "unconfigured with a site", topo: qemu.Pair, args: []string{"--unconfigured", "--site", "s.toml"}, euid: 0,
			wantErr: "drop --site", usage: true},
		{name: "unconfigured as a user", topo: qemu.Pair, args: []string{"--unconfigured"}, euid: 1000,
			wantErr: "--unconfigured needs root"},
		{name: "with a site as a user: the site wins the complaint", topo: qemu.Pair, args: []string{"--site", "s.toml", "--unconfigured"}, euid: 1000,
			wantErr: "drop --site", usage: true},
		{name: "an argument", topo: qemu.Pair, args: []string{"--unconfigured", "head-a"}, euid: 0,
			wantErr: `unexpected argument "head-a"`, usage: true},
		{name: "an unknown flag", topo: qemu.Pair, args: []string{"--unconfigure"}, euid: 0,
			wantErr: "flag provided but not defined", usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLabFlags(tt.topo, tt.args, tt.euid)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
			if ue := (usageError{}); errors.As(err, &ue) != tt.usage {
				t.Errorf("%v: a usage error: %v, want %v", err, !tt.usage, tt.usage)
			}
		})
	}
}

func TestFormatWizard(t *testing.T) {
	const fp = "60AA F090 17B2 DE86 3441 A683 B44A 7CB8 D798 3613 2683 9F96 1EF2 21B6 C8F6 6BA4"
	ready := qemu.WizardBlock{State: "not configured", URL: "https://10.0.0.100/", Code: "5144 0256", Until: "23:36", Fingerprint: fp}
	tests := []struct {
		name          string
		b             qemu.WizardBlock
		local         string
		ferr, checked error
		hint, full    bool
		want, wantNot []string
	}{
		{name: "a code", b: ready, local: "127.0.0.1:40001", hint: true,
			want: []string{"head-a: pairing wizard (this head is not configured)\n", "open     https://127.0.0.1:40001/   (forwarded to https://10.0.0.100/",
				"code     5144 0256   (valid until 23:36", "cert     SHA-256 " + fp + "\n", "(the lab saw this certificate", "compare  ", "docs/pairing.md"},
			wantNot: []string{"client"}},
		{name: "a new code: no hint again", b: ready, local: "127.0.0.1:40001",
			want: []string{"code     5144 0256"}, wantNot: []string{"docs/pairing.md"}},
		{name: "full: the client answers discovery", b: ready, local: "127.0.0.1:40001", hint: true, full: true,
			want: []string{"the client boots the same image unconfigured"}},
		{name: "no forward", b: ready, ferr: errors.New("169.254.1.1:443 is not on the management segment"),
			want: []string{"open     no loopback forward to https://10.0.0.100/: 169.254.1.1:443 is not"}, wantNot: []string{"127.0.0.1", "(the lab saw", "not checked"}},
		{name: "not checked", b: ready, local: "127.0.0.1:40001", checked: errors.New("connection refused"),
			want: []string{"(not checked through the forward: connection refused)"}},
		{name: "being paired", b: qemu.WizardBlock{State: "being paired", URL: "https://10.0.0.100/", Fingerprint: fp}, local: "127.0.0.1:40001", hint: true,
			want: []string{"head-a: this head is being paired; wizard: https://127.0.0.1:40001/"}, wantNot: []string{"code", "docs/pairing.md"}},
		{name: "configured, no URL", b: qemu.WizardBlock{State: "configured", Fingerprint: fp},
			want: []string{"head-a: this head is configured\n"}, wantNot: []string{"wizard:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := formatWizard("head-a", tt.b, tt.local, tt.ferr, tt.checked, tt.hint, tt.full)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("no %q in:\n%s", w, got)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(got, w) {
					t.Errorf("%q in:\n%s", w, got)
				}
			}
		})
	}
}

// The lab compares the certificate it sees through a forward with the
// console's fingerprint, and says so when they differ.
func TestCheckWizardCert(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	sum := sha256.Sum256(srv.Certificate().Raw)
	right := wizard.FormatFingerprint(sum[:])
	sum[0] ^= 1
	wrong := wizard.FormatFingerprint(sum[:])
	addr := strings.TrimPrefix(srv.URL, "https://")
	ctx := context.Background()
	if err := checkWizardCert(ctx, addr, right, 5*time.Second); err != nil {
		t.Errorf("the right fingerprint: %v", err)
	}
	if err := checkWizardCert(ctx, addr, wrong, 5*time.Second); err == nil || !strings.Contains(err.Error(), "WARNING") {
		t.Errorf("a wrong fingerprint: %v", err)
	}
	srv.Close()
	if err := checkWizardCert(ctx, addr, right, 1500*time.Millisecond); err == nil {
		t.Error("nobody listening: no error")
	}
}
