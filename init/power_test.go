package pid1

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestHasBit(t *testing.T) {
	tests := []struct {
		bitmap string
		bit    int
		want   bool
	}{
		// The ACPI power button: KEY_POWER (116) is bit 52 of the second long.
		{"10000000000000 0\n", keyPower, true},
		{"10000000000000 0", 0, false},
		// A full keyboard's map, most significant long first.
		{"402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe", keyPower, true},
		{"1 0", 0, false},
		{"1", 0, true},
		{"", keyPower, false},
		{"zz 0", keyPower, false},
	}
	for _, tt := range tests {
		if got := hasBit(tt.bitmap, tt.bit); got != tt.want {
			t.Errorf("hasBit(%q, %d) = %v, want %v", tt.bitmap, tt.bit, got, tt.want)
		}
	}
}

func TestPowerKeyDevices(t *testing.T) {
	sys := t.TempDir()
	for name, caps := range map[string]string{
		"event0": "402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe\n", // keyboard
		"event1": "10000000000000 0\n",                                            // Power Button
		"event2": "0\n",                                                           // a mouse
		"mouse0": "10000000000000 0\n",                                            // not an event device
	} {
		dir := filepath.Join(sys, name, "device", "capabilities")
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "key"), []byte(caps), 0o644)
	}
	got, err := powerKeyDevices(sys)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"event0", "event1"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestIsPowerPress(t *testing.T) {
	ev := func(typ, code uint16, value int32) []byte {
		b := make([]byte, inputEventSize)
		binary.NativeEndian.PutUint16(b[16:], typ)
		binary.NativeEndian.PutUint16(b[18:], code)
		binary.NativeEndian.PutUint32(b[20:], uint32(value))
		return b
	}
	tests := []struct {
		name string
		ev   []byte
		want bool
	}{
		{"press", ev(evKey, keyPower, 1), true},
		{"release", ev(evKey, keyPower, 0), false},
		{"autorepeat", ev(evKey, keyPower, 2), false},
		{"other key", ev(evKey, 30, 1), false},
		{"sync event", ev(0, 0, 0), false},
	}
	for _, tt := range tests {
		if got := isPowerPress(tt.ev); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
