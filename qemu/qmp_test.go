package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// fakeQMP speaks enough QMP for the client: greeting, capabilities,
// set_link (unknown names fail like QEMU's), system_reset (answers, then
// emits RESET), quit (closes without answering, as QEMU may).
func fakeQMP(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vm.qmp")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		enc := json.NewEncoder(conn)
		enc.Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
		sc := bufio.NewScanner(conn)
		negotiated := false
		for sc.Scan() {
			var m struct {
				Execute   string         `json:"execute"`
				ID        string         `json:"id"`
				Arguments map[string]any `json:"arguments"`
			}
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			fail := func(class, desc string) {
				enc.Encode(map[string]any{"id": m.ID, "error": map[string]any{"class": class, "desc": desc}})
			}
			switch {
			case m.Execute == "qmp_capabilities":
				negotiated = true
				enc.Encode(map[string]any{"id": m.ID, "return": map[string]any{}})
			case !negotiated:
				fail("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
			case m.Execute == "set_link" && m.Arguments["name"] != "rep0":
				fail("DeviceNotFound", "Device '"+m.Arguments["name"].(string)+"' not found")
			case m.Execute == "system_reset":
				enc.Encode(map[string]any{"id": m.ID, "return": map[string]any{}})
				now := time.Now()
				enc.Encode(map[string]any{"event": "RESET", "data": map[string]any{"guest": false},
					"timestamp": map[string]any{"seconds": now.Unix(), "microseconds": now.Nanosecond() / 1000}})
			case m.Execute == "quit":
				return
			default:
				enc.Encode(map[string]any{"id": m.ID, "return": map[string]any{}})
			}
		}
	}()
	return path
}

func TestQMP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, fakeQMP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	tests := []struct {
		name      string
		do        func() error
		wantClass string // "" means success
	}{
		{"set_link down", func() error { return q.SetLink(ctx, "rep0", false) }, ""},
		{"set_link up", func() error { return q.SetLink(ctx, "rep0", true) }, ""},
		{"set_link unknown", func() error { return q.SetLink(ctx, "nope", false) }, "DeviceNotFound"},
		{"powerdown", func() error { return q.Powerdown(ctx) }, ""},
		{"reset under -no-reboot", func() error { return q.Reset(ctx, true) }, ""},
		{"device_del", func() error { return q.DeviceDel(ctx, "data0") }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			var qe *QMPError
			switch {
			case tc.wantClass == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantClass != "" && (!errors.As(err, &qe) || qe.Class != tc.wantClass):
				t.Fatalf("err = %v, want class %s", err, tc.wantClass)
			}
		})
	}

	ev, err := q.WaitEvent(ctx, "RESET", time.Now().Add(-time.Minute), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Events(); len(got) != 1 || got[0].Name != "RESET" || ev.Name != "RESET" {
		t.Errorf("events = %+v", got)
	}
	if err := q.Quit(ctx); err != nil {
		t.Errorf("quit: %v", err)
	}
	select {
	case <-q.Done():
	case <-ctx.Done():
		t.Fatal("connection still open after quit")
	}
	if err := q.SetLink(ctx, "rep0", true); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("after quit: err = %v, want ErrQMPClosed", err)
	}
	if _, err := q.WaitEvent(ctx, "SHUTDOWN", time.Time{}, nil); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("WaitEvent after close: err = %v, want ErrQMPClosed", err)
	}
}

func TestDialQMPTimesOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := DialQMP(ctx, filepath.Join(t.TempDir(), "absent.qmp")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}
