package pid1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// kmsgMax keeps a record under the kernel's 1024-byte /dev/kmsg limit.
const kmsgMax = 976

// outputs are the sinks every log record goes to.
type outputs struct {
	mu      sync.Mutex
	console io.Writer   // /dev/console; nil if it could not be opened
	extra   []io.Writer // manifest console when it is not a kernel console
	kmsg    io.Writer   // /dev/kmsg; nil until /dev is mounted
	// echoBelow is the kernel's console_loglevel: the kernel itself prints
	// kmsg records below it on the console, so we skip our own copy.
	echoBelow int
	// ring is the persistent log on the state partition; nil in tests.
	ring *logRing
}

// kernLevel maps a slog level to a syslog priority for /dev/kmsg.
func kernLevel(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// write emits one formatted line (without the "tandem: " prefix).
func (o *outputs) write(level slog.Level, line string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	kl := kernLevel(level)
	echoed := false
	if o.kmsg != nil {
		rec := fmt.Sprintf("<%d>tandem: %s", kl, line)
		if len(rec) > kmsgMax-1 {
			rec = rec[:kmsgMax-1]
		}
		// One write is one record. Without the newline the kernel keeps the
		// record open for a continuation and does not print it yet.
		rec += "\n"
		if _, err := io.WriteString(o.kmsg, rec); err == nil {
			echoed = kl < o.echoBelow
		}
	}
	text := "tandem: " + line + "\n"
	if o.console != nil && !echoed {
		io.WriteString(o.console, text)
	}
	for _, w := range o.extra {
		io.WriteString(w, text)
	}
	if o.ring != nil {
		o.ring.add(time.Now(), level.String(), line)
	}
}

// writeRaw prints a line on the consoles only (used before kmsg exists).
func (o *outputs) writeRaw(line string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	text := "tandem: " + line + "\n"
	if o.console != nil {
		io.WriteString(o.console, text)
	}
	for _, w := range o.extra {
		io.WriteString(w, text)
	}
	if o.ring != nil {
		o.ring.add(time.Now(), "INFO", line)
	}
}

// drain waits until the consoles have sent what was written to them:
// the kernel does not flush a tty's buffer before it powers off.
func (o *outputs) drain() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range append([]io.Writer{o.console}, o.extra...) {
		if t, ok := w.(*ttyWriter); ok {
			unix.IoctlSetInt(int(t.f.Fd()), unix.TCSBRK, 1) // tcdrain
		}
	}
}

// reopenConsoles opens the consoles afresh. When a session leader whose
// controlling terminal is the console exits (the rescue shell), the kernel
// hangs the terminal up: a serial port is shut down and what PID 1 writes
// afterwards goes nowhere until the device is opened again.
func (o *outputs) reopenConsoles() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range append([]io.Writer{o.console}, o.extra...) {
		if t, ok := w.(*ttyWriter); ok {
			t.reopen()
		}
	}
}

// ttyWriter writes to a terminal and can reopen it after a hangup (see
// reopenConsoles); a write that fails with EIO (a hung-up tty fd) reopens
// it too.
type ttyWriter struct {
	path string
	f    *os.File
}

func newTTYWriter(f *os.File) *ttyWriter { return &ttyWriter{path: f.Name(), f: f} }

func (t *ttyWriter) Write(p []byte) (int, error) {
	n, err := t.f.Write(p)
	if err == nil || !errors.Is(err, unix.EIO) {
		return n, err
	}
	if !t.reopen() {
		return n, err
	}
	return t.f.Write(p)
}

func (t *ttyWriter) reopen() bool {
	f, err := os.OpenFile(t.path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	t.f.Close()
	t.f = f
	return true
}

func (o *outputs) hasExtra(path string) bool {
	for _, n := range o.extraNames() {
		if n == path {
			return true
		}
	}
	return false
}

func (o *outputs) extraNames() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var names []string
	for _, w := range o.extra {
		if t, ok := w.(*ttyWriter); ok {
			names = append(names, t.path)
		}
	}
	return names
}

func (o *outputs) addExtra(f *os.File) {
	o.mu.Lock()
	o.extra = append(o.extra, newTTYWriter(f))
	o.mu.Unlock()
}

// handler is a slog.Handler writing "tandem: [LEVEL ]msg k=v ..." lines.
type handler struct {
	out    *outputs
	level  slog.Leveler
	prefix string // preformatted attrs from WithAttrs
	group  string // dotted group prefix for keys
}

func newHandler(out *outputs, level slog.Leveler) *handler {
	return &handler{out: out, level: level}
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	h.out.write(r.Level, formatRecord(r, h.prefix, h.group))
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		appendAttr(&b, h.group, a)
	}
	h2 := *h
	h2.prefix = b.String()
	return &h2
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}

// formatRecord renders a record; info is the common case and gets no tag.
func formatRecord(r slog.Record, prefix, group string) string {
	var b strings.Builder
	if r.Level != slog.LevelInfo {
		b.WriteString(r.Level.String())
		b.WriteByte(' ')
	}
	b.WriteString(r.Message)
	b.WriteString(prefix)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, group, a)
		return true
	})
	return b.String()
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := group
		if a.Key != "" {
			g += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			appendAttr(b, g, ga)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteByte('=')
	var s string
	switch a.Value.Kind() {
	case slog.KindDuration:
		s = a.Value.Duration().Round(time.Millisecond).String()
	default:
		s = a.Value.String()
	}
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		s = strconv.Quote(s)
	}
	b.WriteString(s)
}

// consoleLoglevel reads the kernel's current console_loglevel; 0 if unknown,
// which means "assume the kernel echoes nothing".
func consoleLoglevel() int {
	b, err := os.ReadFile("/proc/sys/kernel/printk")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
