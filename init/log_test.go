package pid1

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// recorder keeps each Write separately, as /dev/kmsg does.
type recorder struct{ writes []string }

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name      string
		echoBelow int
		log       func(*slog.Logger)
		kmsg      []string
		console   string
	}{
		{
			name:      "info, kernel echoes it",
			echoBelow: 7,
			log:       func(l *slog.Logger) { l.Info("root mounted", "dev", "/dev/vda2", "ms", 12) },
			kmsg:      []string{"<6>tandem: root mounted dev=/dev/vda2 ms=12\n"},
			console:   "",
		},
		{
			name:      "info, quiet kernel",
			echoBelow: 4,
			log:       func(l *slog.Logger) { l.Info("x") },
			kmsg:      []string{"<6>tandem: x\n"},
			console:   "tandem: x\n",
		},
		{
			name:      "warn quoted, group, with attrs",
			echoBelow: 4,
			log: func(l *slog.Logger) {
				l.With("step", "mount root").WithGroup("g").Warn("failed", "err", errors.New("no such device"))
			},
			kmsg:    []string{"<4>tandem: WARN failed step=\"mount root\" g.err=\"no such device\"\n"},
			console: "tandem: WARN failed step=\"mount root\" g.err=\"no such device\"\n",
		},
		{
			name:      "debug filtered",
			echoBelow: 7,
			log:       func(l *slog.Logger) { l.Debug("hidden") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var con bytes.Buffer
			km := &recorder{}
			out := &outputs{console: &con, kmsg: km, echoBelow: tt.echoBelow}
			tt.log(slog.New(newHandler(out, slog.LevelInfo)))
			if strings.Join(km.writes, "|") != strings.Join(tt.kmsg, "|") {
				t.Errorf("kmsg %q, want %q", km.writes, tt.kmsg)
			}
			if con.String() != tt.console {
				t.Errorf("console %q, want %q", con.String(), tt.console)
			}
		})
	}
}

func TestKmsgTruncated(t *testing.T) {
	km := &recorder{}
	out := &outputs{kmsg: km}
	slog.New(newHandler(out, slog.LevelInfo)).Info(strings.Repeat("x", 5000))
	if len(km.writes) != 1 || len(km.writes[0]) > kmsgMax {
		t.Errorf("got %d writes, first %d bytes", len(km.writes), len(km.writes[0]))
	}
}
