package pid1

import (
	"fmt"
	"strings"
	"time"

	"tandem.dev/tandem/init/status"
)

// serveStatus listens on status.Socket for `tandem status`, `tandem
// poweroff` and `tandem reboot`.
func (b *Boot) serveStatus() error {
	l, err := status.Listen(status.Socket)
	if err != nil {
		return err
	}
	go func() {
		defer func() {
			if r := recover(); r != nil {
				b.Log.Error("status server panic", "panic", fmt.Sprint(r))
			}
		}()
		status.Serve(l, statusHandler{b}, b.Log)
	}()
	return nil
}

type statusHandler struct{ b *Boot }

func (h statusHandler) Status() status.Status { return h.b.Status() }

func (h statusHandler) Shutdown(op string) error {
	return h.b.requestShutdown(op, "tandem "+op)
}

// Status is the node's status as `tandem status` shows it.
func (b *Boot) Status() status.Status {
	b.mu.Lock()
	st := status.Status{
		State:    b.state,
		Node:     b.Node,
		Slot:     b.Slot,
		Config:   b.SiteSource,
		UptimeMS: time.Since(b.Start).Milliseconds(),
		ReadyMS:  b.readyMS,
		Steps:    append([]status.Step(nil), b.steps...),
	}
	if b.reason != nil {
		st.Reason = b.reason.Error()
	}
	if b.Manifest != nil {
		st.Version, st.Board = b.Manifest.Version, b.Manifest.Board
	}
	if b.Site != nil {
		st.Pair = b.Site.Pair.Name
	}
	sup, details := b.sup, b.details
	b.mu.Unlock()
	st.RSSKiB = vmRSS()
	if sup != nil {
		for _, r := range sup.Status() {
			s := status.Service{Name: r.Name, State: string(r.State), Role: r.Role.String(),
				Error: r.LastError, Restarts: r.Restarts}
			if r.ErrorKind != "" && s.Error != "" && !strings.Contains(s.Error, r.ErrorKind) {
				s.Error = r.ErrorKind + ": " + s.Error
			}
			if d := details[r.Name]; d != nil {
				s.Detail = d()
			}
			st.Services = append(st.Services, s)
		}
	} else {
		for name, d := range details { // maintenance: the best-effort network
			st.Services = append(st.Services, status.Service{Name: name, State: "up (maintenance)", Detail: d()})
		}
	}
	return st
}
