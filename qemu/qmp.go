package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// QMP is a client of QEMU's machine protocol over a unix socket. Commands
// carry ids, so several goroutines may use one client; asynchronous events
// are collected in order of arrival.
type QMP struct {
	conn net.Conn

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan qmpReply
	events  []Event
	notify  chan struct{} // closed and replaced on every event and at EOF
	err     error         // set once the connection is gone
	done    chan struct{}
}

// Event is one asynchronous QMP event, such as SHUTDOWN, RESET, POWERDOWN,
// DEVICE_DELETED or VSERPORT_CHANGE.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data,omitempty"`
	// Time is when QEMU emitted it (host clock).
	Time time.Time `json:"-"`
}

// QMPError is an error QEMU returned for a command.
type QMPError struct {
	Command string
	Class   string `json:"class"` // e.g. GenericError, DeviceNotFound
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// ErrQMPClosed means the QMP connection is gone, usually because QEMU exited.
var ErrQMPClosed = errors.New("qmp: connection closed")

type qmpReply struct {
	ret json.RawMessage
	err *QMPError
}

// qmpMessage is anything QEMU sends: a greeting, a reply, or an event.
type qmpMessage struct {
	QMP       json.RawMessage `json:"QMP"`
	ID        string          `json:"id"`
	Return    json.RawMessage `json:"return"`
	Error     *QMPError       `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// DialQMP connects to a QMP socket and negotiates capabilities. It retries
// until ctx ends, because QEMU creates the socket a moment after it starts.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var (
		conn net.Conn
		err  error
		d    net.Dialer
	)
	for {
		if conn, err = d.DialContext(ctx, "unix", path); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: dial %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	q := &QMP{conn: conn, pending: map[string]chan qmpReply{}, notify: make(chan struct{}), done: make(chan struct{})}
	greeting := make(chan error, 1)
	go q.read(greeting)
	select {
	case err = <-greeting:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		_, err = q.Execute(ctx, "qmp_capabilities", nil)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: handshake on %s: %w", path, err)
	}
	return q, nil
}

func (q *QMP) read(greeting chan<- error) {
	sc := bufio.NewScanner(q.conn)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	first := true
	for sc.Scan() {
		var m qmpMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue // QEMU only sends JSON objects; skip anything else
		}
		switch {
		case first && m.QMP != nil:
			greeting <- nil
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data, Time: time.Now()}
			if m.Timestamp != nil && m.Timestamp.Seconds > 0 {
				ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			q.mu.Lock()
			q.events = append(q.events, ev)
			close(q.notify)
			q.notify = make(chan struct{})
			q.mu.Unlock()
		case m.ID != "":
			q.mu.Lock()
			ch := q.pending[m.ID]
			delete(q.pending, m.ID)
			q.mu.Unlock()
			if ch != nil {
				ch <- qmpReply{ret: m.Return, err: m.Error}
			}
		}
		first = false
	}
	err := sc.Err()
	if err == nil {
		err = ErrQMPClosed
	} else {
		err = fmt.Errorf("%w: %v", ErrQMPClosed, err)
	}
	if first {
		greeting <- err
	}
	q.mu.Lock()
	q.err = err
	for id, ch := range q.pending {
		close(ch)
		delete(q.pending, id)
	}
	close(q.notify)
	q.notify = make(chan struct{})
	q.mu.Unlock()
	close(q.done)
}

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	if q.err != nil {
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, q.err)
	}
	q.nextID++
	id := strconv.FormatUint(q.nextID, 10)
	ch := make(chan qmpReply, 1)
	q.pending[id] = ch
	q.mu.Unlock()

	msg := map[string]any{"execute": command, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	q.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetWriteDeadline(dl)
	}
	_, err = q.conn.Write(append(b, '\n'))
	q.wmu.Unlock()
	if err != nil {
		q.forget(id)
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("qmp %s: %w", command, q.closeErr())
		}
		if r.err != nil {
			r.err.Command = command
			return nil, r.err
		}
		return r.ret, nil
	case <-ctx.Done():
		q.forget(id)
		return nil, fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

func (q *QMP) forget(id string) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

func (q *QMP) closeErr() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		return ErrQMPClosed
	}
	return q.err
}

// Events returns the events received so far, oldest first.
func (q *QMP) Events() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Event(nil), q.events...)
}

// WaitEvent waits for the first event named name (and matching match, if
// not nil) that QEMU emitted at or after since.
func (q *QMP) WaitEvent(ctx context.Context, name string, since time.Time, match func(Event) bool) (Event, error) {
	for {
		q.mu.Lock()
		evs, ch, cerr := q.events, q.notify, q.err
		q.mu.Unlock()
		for _, ev := range evs {
			if ev.Name == name && !ev.Time.Before(since) && (match == nil || match(ev)) {
				return ev, nil
			}
		}
		if cerr != nil {
			return Event{}, fmt.Errorf("qmp: waiting for %s: %w", name, cerr)
		}
		select {
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp: waiting for %s: %w", name, ctx.Err())
		case <-ch:
		}
	}
}

// Done is closed when the connection ends (QEMU exited or Close).
func (q *QMP) Done() <-chan struct{} { return q.done }

// Close drops the connection.
func (q *QMP) Close() error { return q.conn.Close() }

// The fault and power commands. Each is one QMP command; callers on the
// VM get them with a timeout, the CLI with its own.

// SetLink brings a NIC's link down or up. name is a netdev id (rep0,
// rep1, mgmt): QEMU then also sets the carrier of the guest NIC on it.
func (q *QMP) SetLink(ctx context.Context, name string, up bool) error {
	_, err := q.Execute(ctx, "set_link", map[string]any{"name": name, "up": up})
	return err
}

// Powerdown presses the ACPI power button.
func (q *QMP) Powerdown(ctx context.Context) error {
	_, err := q.Execute(ctx, "system_powerdown", nil)
	return err
}

// Reset is a hard reset (the reset button). Under -no-reboot QEMU would
// turn a reset into an exit, so the reboot action is set to "reset" for
// the request and restored afterwards: the action is read when the
// request is made, not when it is carried out.
func (q *QMP) Reset(ctx context.Context, noReboot bool) error {
	if noReboot {
		if _, err := q.Execute(ctx, "set-action", map[string]any{"reboot": "reset"}); err != nil {
			return err
		}
	}
	_, err := q.Execute(ctx, "system_reset", nil)
	if noReboot {
		if _, rerr := q.Execute(ctx, "set-action", map[string]any{"reboot": "shutdown"}); err == nil {
			err = rerr
		}
	}
	return err
}

// Quit ends QEMU at once: a power pull, no guest shutdown. QEMU may close
// the socket before it answers, so a closed connection counts as success.
func (q *QMP) Quit(ctx context.Context) error {
	_, err := q.Execute(ctx, "quit", nil)
	if errors.Is(err, ErrQMPClosed) {
		return nil
	}
	return err
}

// DeviceDel asks QEMU to unplug a device. For PCI devices the guest must
// eject it; the removal is complete at the DEVICE_DELETED event.
func (q *QMP) DeviceDel(ctx context.Context, id string) error {
	_, err := q.Execute(ctx, "device_del", map[string]any{"id": id})
	return err
}
