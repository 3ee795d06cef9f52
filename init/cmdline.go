package pid1

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"tandem.dev/tandem/image/manifest"
)

// Cmdline is what PID 1 takes from the kernel command line.
type Cmdline struct {
	Raw string
	// Slot is the root slot to boot, "a" or "b"; empty when not given.
	Slot string
	// Consoles are the console= devices without options, e.g. ttyS0.
	Consoles []string
	// Debug is set by tandem.debug (or tandem.debug=1).
	Debug bool
	// Node names this head's node in the site config (tandem.node=head-a)
	// when its management MAC does not tell (see identify.go).
	Node string
}

// ParseCmdline parses the kernel command line. Unknown parameters are
// ignored; a malformed tandem.* parameter is an error so that a typo in a
// boot entry does not silently boot the wrong slot. The result is filled in
// even on error (the consoles are still needed to report it).
func ParseCmdline(raw string) (Cmdline, error) {
	c := Cmdline{Raw: strings.TrimSpace(raw)}
	var errs []error
	for _, f := range splitCmdline(c.Raw) {
		if f == "--" {
			break // the rest is argv for init, not kernel parameters
		}
		key, val, hasVal := strings.Cut(f, "=")
		val = strings.Trim(val, `"`)
		switch key {
		case "tandem.slot":
			if val != "a" && val != "b" {
				errs = append(errs, fmt.Errorf("tandem.slot=%q: want a or b", val))
				continue
			}
			c.Slot = val
		case "tandem.debug":
			switch {
			case !hasVal, val == "1", val == "true", val == "yes", val == "on":
				c.Debug = true
			case val == "0", val == "false", val == "no", val == "off":
				c.Debug = false
			default:
				errs = append(errs, fmt.Errorf("tandem.debug=%q: want 0 or 1", val))
			}
		case "tandem.node":
			if val == "" {
				errs = append(errs, errors.New("tandem.node= is empty: name a node of the site config"))
				continue
			}
			c.Node = val
		case "console":
			dev, _, _ := strings.Cut(val, ",") // drop ",115200n8"
			dev = strings.TrimPrefix(dev, "/dev/")
			if dev != "" {
				c.Consoles = append(c.Consoles, dev)
			}
		}
	}
	return c, errors.Join(errs...)
}

// splitCmdline splits on blanks outside double quotes, as the kernel does.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, inField := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inField = true
			cur.WriteRune(r)
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if inField {
				out = append(out, cur.String())
				cur.Reset()
				inField = false
			}
		default:
			inField = true
			cur.WriteRune(r)
		}
	}
	if inField {
		out = append(out, cur.String())
	}
	return out
}

// rootLabel maps a slot to its GPT partition label. No slot means slot A,
// which is what a freshly flashed image fills.
func rootLabel(slot string) (string, error) {
	switch slot {
	case "a", "":
		return manifest.LabelRootA, nil
	case "b":
		return manifest.LabelRootB, nil
	}
	return "", fmt.Errorf("unknown slot %q", slot)
}

// extraConsoles returns the device paths, besides /dev/console, that log
// output must also go to: the manifest's console when the kernel command
// line did not already make it a kernel console.
func extraConsoles(cmdline []string, manifestConsole string) []string {
	dev := strings.TrimPrefix(manifestConsole, "/dev/")
	if dev == "" || slices.Contains(cmdline, dev) {
		return nil
	}
	return []string{"/dev/" + dev}
}
