package pid1

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// rescueShell is the console shell [diagnostics] rescue_shell enables.
const rescueShell = "/usr/bin/busybox"

// startRescueShell runs a shell on the console, and again whenever it
// exits, only if the site config asks for it: a shell on the console of a
// production head is an open door.
func (b *Boot) startRescueShell() error {
	if b.Site == nil || !b.Site.Diagnostics.RescueShell {
		b.Log.Info("rescue shell: off (diagnostics.rescue_shell = false)")
		return nil
	}
	if _, err := os.Stat(rescueShell); err != nil {
		return err
	}
	go b.rescueLoop()
	b.Log.Info("rescue shell: on the console (diagnostics.rescue_shell = true)")
	return nil
}

func (b *Boot) rescueLoop() {
	for !b.stopping.Load() {
		start := time.Now()
		err := b.runShell()
		// The shell's exit hung the console up; open it again.
		b.out.reopenConsoles()
		if err != nil && !b.stopping.Load() {
			b.Log.Warn("rescue shell", "err", err)
		}
		// A shell that dies at once (no console) must not spin.
		if time.Since(start) < 5*time.Second {
			time.Sleep(5 * time.Second)
		}
	}
}

func (b *Boot) runShell() error {
	con, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer con.Close()
	cmd := exec.Command(rescueShell, "sh")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = con, con, con
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=linux", "PS1=tandem-rescue# "}
	// Its own session with the console as controlling terminal, so
	// Ctrl-C reaches the shell's children and not PID 1.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := b.Reaper.Start(cmd); err != nil {
		return err
	}
	return b.Reaper.Wait(cmd)
}
