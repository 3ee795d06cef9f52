package pid1

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/image/manifest"
)

// modprobePath is what the kernel runs to load a module on demand
// (mount -t nfs wants nfs and nfsv3, losetup wants loop). It links to
// this binary: the image has modules.dep but not kmod's binary indexes,
// which kmod's modprobe requires and which only depmod writes.
const modprobePath = "/run/tandem/modprobe"

// installModprobe points the kernel's module loader at Modprobe.
func (b *Boot) installModprobe() error {
	os.Remove(modprobePath)
	if err := os.Symlink(manifest.SelfPath, modprobePath); err != nil {
		return err
	}
	return os.WriteFile("/proc/sys/kernel/modprobe", []byte(modprobePath), 0o644)
}

// IsModprobe reports whether the binary was started as the kernel's
// module loader.
func IsModprobe(argv0 string) bool { return filepath.Base(argv0) == "modprobe" }

// Modprobe loads the modules the arguments name (the kernel runs
// "modprobe -q -- fs-nfs"); names may be aliases. It returns the exit
// status.
func Modprobe(args []string) int {
	var names []string
	quiet := false
	for _, a := range args {
		switch {
		case a == "-q" || a == "--quiet":
			quiet = true
		case strings.HasPrefix(a, "-"):
		default:
			names = append(names, a)
		}
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		fmt.Fprintln(os.Stderr, "modprobe:", err)
		return 1
	}
	level := slog.LevelInfo
	if quiet {
		level = slog.LevelError
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := loadModules(log, "/", unix.ByteSliceToString(uts.Release[:]), names); err != nil {
		fmt.Fprintln(os.Stderr, "modprobe:", err)
		return 1
	}
	return 0
}
