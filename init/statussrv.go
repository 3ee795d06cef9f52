package pid1

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"tandem.dev/tandem/ha/supervisor"
	"tandem.dev/tandem/status"
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

// errNoHA: the request needs the HA supervisor, which runs only once
// the services do.
var errNoHA = errors.New("the services and the HA supervisor are not running on this head")

func (h statusHandler) Switchover(ctx context.Context) (string, error) {
	s := h.b.haSup()
	if s == nil {
		return "", errNoHA
	}
	return s.Switchover(ctx)
}

func (h statusHandler) Operate(ctx context.Context, req status.Request) (string, error) {
	s := h.b.haSup()
	if s == nil {
		return "", errNoHA
	}
	switch req.Op {
	case status.OpCleanup:
		return s.Cleanup(req.Layer)
	case status.OpFencePeer:
		return s.FencePeerForDRBD(ctx)
	}
	return s.SetMode(ctx, req)
}

func (h statusHandler) Shutdown(op string) error {
	return h.b.requestShutdown(op, "tandem "+op)
}

// Status is the node's status as `tandem status` shows it: this head's,
// with the peer's as it answers over the control channel.
func (b *Boot) Status() status.Status {
	st := b.localStatus()
	if st.Role == "" {
		return st // the services (and the control channel) do not run
	}
	h := b.haSup()
	if h == nil {
		return st
	}
	ctx, cancel := context.WithTimeout(context.Background(), supervisor.PeerTimeout)
	defer cancel()
	peer, err := h.PeerStatus(ctx)
	if err != nil {
		st.PeerError = err.Error()
	} else {
		peer.Peer, peer.PeerError = nil, ""
		st.Peer = peer
	}
	return st
}

// localStatus is this head's status alone.
func (b *Boot) localStatus() status.Status {
	b.mu.Lock()
	st := status.Status{
		State:    b.state,
		Node:     b.Node,
		Slot:     b.Slot,
		Config:   b.SiteSource,
		UptimeMS: time.Since(b.Start).Milliseconds(),
		ReadyMS:  b.readyMS,
		Steps:    append([]status.Step(nil), b.steps...),
		Lab:      b.lab,
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
	sup, details, stk, h := b.sup, b.details, b.stack, b.ha
	b.mu.Unlock()
	if h != nil {
		st.Role = string(h.Role())
		st.HA = h.StatusView()
	}
	if stk != nil {
		st.RAID, st.DRBD = stk.RAIDStatus(), stk.DRBDStatus()
	}
	st.RSSKiB = vmRSS()
	if sup != nil {
		for _, r := range sup.Status() {
			s := status.Service{Name: r.Name, State: string(r.State), Role: r.Role.String(),
				Error: r.LastError, Restarts: r.Restarts, FailCount: r.FailCount, Escalated: r.Escalated}
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
