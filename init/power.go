package pid1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/status"
)

// Linux input event codes (linux/input-event-codes.h).
const (
	evKey    = 0x01
	keyPower = 116
	// inputEventSize is struct input_event on 64-bit: timeval, type,
	// code, value.
	inputEventSize = 24
)

// watchPowerButton finds the input devices that report KEY_POWER (the
// ACPI power button, which QEMU's system_powerdown presses) and powers
// the node off cleanly when it is pressed. It needs the button and evdev
// modules (boot_modules).
func (b *Boot) watchPowerButton() error {
	var devs []string
	deadline := time.Now().Add(3 * time.Second)
	for {
		var err error
		devs, err = powerKeyDevices("/sys/class/input")
		if err != nil {
			return err
		}
		if len(devs) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(devs) == 0 {
		return errors.New("no input device reports KEY_POWER (are the button and evdev modules loaded?)")
	}
	for _, d := range devs {
		path, err := inputNode(d)
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		go b.readPowerKey(f)
		b.Log.Info("power button: watching", "dev", path, "name", inputName(d))
	}
	return nil
}

// powerKeyDevices lists the eventN names whose key capabilities include
// KEY_POWER.
func powerKeyDevices(sysClassInput string) ([]string, error) {
	ents, err := os.ReadDir(sysClassInput)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "event") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(sysClassInput, e.Name(), "device", "capabilities", "key"))
		if err != nil {
			continue
		}
		if hasBit(string(raw), keyPower) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// hasBit reads a sysfs capability bitmap: hex longs, most significant
// first, separated by spaces.
func hasBit(bitmap string, bit int) bool {
	words := strings.Fields(bitmap)
	const bitsPerWord = 64
	i := len(words) - 1 - bit/bitsPerWord
	if i < 0 || i >= len(words) {
		return false
	}
	w, err := strconv.ParseUint(words[i], 16, 64)
	if err != nil {
		return false
	}
	return w&(1<<(bit%bitsPerWord)) != 0
}

// inputNode returns /dev/input/eventN, creating it from sysfs if needed.
func inputNode(name string) (string, error) {
	path := filepath.Join("/dev/input", name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	raw, err := os.ReadFile(filepath.Join("/sys/class/input", name, "dev"))
	if err != nil {
		return "", err
	}
	var maj, min uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(raw)), "%d:%d", &maj, &min); err != nil {
		return "", fmt.Errorf("%s dev %q: %w", name, raw, err)
	}
	os.MkdirAll("/dev/input", 0o755)
	if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(maj, min))); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", err
	}
	return path, nil
}

func inputName(name string) string {
	raw, _ := os.ReadFile(filepath.Join("/sys/class/input", name, "device", "name"))
	return strings.TrimSpace(string(raw))
}

func (b *Boot) readPowerKey(f *os.File) {
	defer f.Close()
	defer func() {
		if r := recover(); r != nil {
			b.Log.Error("power button reader panic", "panic", fmt.Sprint(r))
		}
	}()
	buf := make([]byte, inputEventSize*16)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				b.Log.Warn("power button: read", "dev", f.Name(), "err", err)
			}
			return
		}
		for off := 0; off+inputEventSize <= n; off += inputEventSize {
			if isPowerPress(buf[off : off+inputEventSize]) {
				if err := b.requestShutdown(status.OpPoweroff, "power button"); err != nil {
					b.Log.Info("power button: " + err.Error())
				}
			}
		}
	}
}

// isPowerPress decodes one struct input_event.
func isPowerPress(ev []byte) bool {
	typ := binary.NativeEndian.Uint16(ev[16:])
	code := binary.NativeEndian.Uint16(ev[18:])
	value := int32(binary.NativeEndian.Uint32(ev[20:]))
	return typ == evKey && code == keyPower && value == 1
}
