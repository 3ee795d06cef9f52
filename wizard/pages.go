package wizard

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"tandem.dev/tandem/pairing"
)

//go:embed web
var webFS embed.FS

var stepNames = []string{"Sign in", "Other head", "Pair", "Hardware", "Site", "Create", "Done"}

// Steps of the flow, 1-based as the page header shows them.
const (
	stepSignIn = iota + 1
	stepPeers
	stepPair
	stepHardware
	stepSite
	stepCreate
	stepDone
)

var pageNames = []string{"login", "message", "peers", "peercode", "hardware", "site", "review", "progress", "summary"}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"short": func(id string) string { return id[:min(8, len(id))] },
		"fp":    FormatFingerprint,
		"size":  HumanSize,
		"speed": humanSpeed,
		"join":  strings.Join,
		"add":   func(a, b int) int { return a + b },
		"steps": func() []string { return stepNames },
		"addr":  func(cidr string) string { a, _, _ := strings.Cut(cidr, "/"); return a },
		"field": func(label, name, value string, errs []string, hint string) fieldView {
			return fieldView{Label: label, Name: name, Value: value, Errs: errs, Hint: hint}
		},
	}
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("wizard: page %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

type fieldView struct {
	Label, Name, Value, Hint string
	Errs                     []string
}

// view is what every page gets.
type view struct {
	Title    string
	Step     int
	CSRF     string
	SignedIn bool
	Self     headView
	Error    string
	Notice   string
	Data     any
}

type headView struct {
	ID, FP, Image string
}

func (w *Wizard) view(title string, step int, s *opSession) view {
	v := view{Title: title, Step: step, Self: headView{ID: w.id.ID, FP: FormatFingerprint(w.id.Fingerprint), Image: w.opts.ImageVersion}}
	if s != nil {
		v.CSRF, v.SignedIn = s.csrf, true
	}
	return v
}

func (w *Wizard) render(rw http.ResponseWriter, status int, page string, v view) {
	var b bytes.Buffer
	if err := w.pages[page].Execute(&b, v); err != nil {
		w.log.Error("wizard: render", "page", page, "err", err)
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(status)
	rw.Write(b.Bytes())
}

// messageView is the page that says why there is nothing to do here.
type messageView struct {
	Heading, Text  string
	Link, LinkText string
}

func (w *Wizard) message(rw http.ResponseWriter, status int, title string, s *opSession, m messageView) {
	v := w.view(title, 0, s)
	v.Data = m
	w.render(rw, status, "message", v)
}

func (w *Wizard) routePages(mux *http.ServeMux) {
	static, _ := fs.Sub(webFS, "web/static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", w.getLogin)
	mux.HandleFunc("POST /login", w.postLogin)
	mux.HandleFunc("GET /{$}", w.page(w.getRoot))
	mux.HandleFunc("POST /logout", w.page(w.postLogout))
	mux.HandleFunc("GET /peers", w.page(w.getPeers))
	mux.HandleFunc("POST /peers", w.page(w.postPeers))
	mux.HandleFunc("GET /peer-code", w.page(w.getPeerCode))
	mux.HandleFunc("POST /peer-code", w.page(w.postPeerCode))
	mux.HandleFunc("POST /start-over", w.page(w.postStartOver))
	mux.HandleFunc("GET /hardware", w.page(w.getHardware))
	mux.HandleFunc("POST /hardware", w.page(w.postHardware))
	mux.HandleFunc("GET /site", w.page(w.getSite))
	mux.HandleFunc("POST /site", w.page(w.postSite))
	mux.HandleFunc("GET /review", w.page(w.getReview))
	mux.HandleFunc("POST /create", w.page(w.postCreate))
	mux.HandleFunc("GET /progress", w.page(w.getProgress))
	mux.HandleFunc("GET /progress.json", w.page(w.getProgressJSON))
	mux.HandleFunc("POST /confirm", w.page(w.postConfirm))
	mux.HandleFunc("GET /summary", w.page(w.getSummary))
	mux.HandleFunc("GET /site.toml", w.page(w.getSiteTOML))
}

// page guards every page but the code form: without this browser's
// session nothing is shown, and no form is accepted without the
// session's CSRF token.
func (w *Wizard) page(h func(http.ResponseWriter, *http.Request, *opSession)) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		s, st := w.operator(r)
		switch st {
		case noSession:
			http.Redirect(rw, r, "/login", http.StatusSeeOther)
			return
		case otherSession:
			w.otherSessionPage(rw)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(rw, r.Body, 64<<10)
			if err := r.ParseForm(); err != nil || !equalToken(r.PostFormValue("csrf"), s.csrf) {
				w.message(rw, http.StatusForbidden, "Form refused", s, messageView{
					Heading: "This form was refused",
					Text:    "It did not come from this wizard's current page (an old tab, or another site). Nothing was changed.",
					Link:    "/", LinkText: "Back to the wizard"})
				return
			}
		}
		h(rw, r, s)
	}
}

func (w *Wizard) otherSessionPage(rw http.ResponseWriter) {
	w.mu.Lock()
	since, remote, who := time.Time{}, "", "another browser"
	if w.op != nil {
		since, remote = w.op.created, w.op.remote
		if w.op.bearer {
			who = "tandem pair"
		}
	}
	w.mu.Unlock()
	w.message(rw, http.StatusConflict, "Another session is in progress", nil, messageView{
		Heading: "Another session is in progress",
		Text: fmt.Sprintf("This head is being set up from %s (%s, signed in at %s). "+
			"Only one browser can set up a head at a time. Continue in that browser, or wait: a session idle for %s ends, and you can sign in with the setup code then.",
			who, remote, since.Format("15:04"), w.opts.SessionIdle.Round(time.Minute)),
		Link: "/login", LinkText: "Try again"})
}

// headGone answers pages while the head is not the operator's to set up.
func (w *Wizard) headGone(rw http.ResponseWriter, s *opSession) bool {
	m, configured, gone := w.gone()
	switch {
	case gone && configured:
		w.message(rw, http.StatusOK, "Configured", s, m)
	case gone:
		m.Link, m.LinkText = "/", "Refresh"
		w.message(rw, http.StatusOK, "Being paired", s, m)
	}
	return gone
}

// gone says why the head is not the operator's to set up, for the pages
// and tandem pair alike: it is configured (and was not set up from
// here), or another head is pairing it.
func (w *Wizard) gone() (m messageView, configured, gone bool) {
	w.mu.Lock()
	p, active, ini := w.phase, w.active, w.ini
	peerID := ""
	if active != nil {
		peerID = active.peerID
	}
	w.mu.Unlock()
	switch {
	case p == phaseConfigured && ini == nil:
		return messageView{Heading: "This head is configured",
			Text: "It has its site config and starts as part of its pair. The setup code no longer works."}, true, true
	case p == phaseResponding && active != nil:
		return messageView{Heading: "This head is being set up from the other head",
			Text: fmt.Sprintf("Head %s (%s) paired with this head and finishes the setup for both. Continue in that head's wizard.", short(peerID), remoteHost(active.remote))}, false, true
	}
	return messageView{}, false, false
}

func short(id string) string { return id[:min(8, len(id))] }

func remoteHost(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// configuredPage: once configured, the code form is gone for good.
func (w *Wizard) configuredPage(rw http.ResponseWriter, s *opSession) bool {
	w.mu.Lock()
	p := w.phase
	w.mu.Unlock()
	if p != phaseConfigured {
		return false
	}
	w.message(rw, http.StatusOK, "Configured", s, messageView{Heading: "This head is configured",
		Text: "It has its site config and starts as part of its pair. The setup code no longer works."})
	return true
}

func (w *Wizard) getLogin(rw http.ResponseWriter, r *http.Request) {
	_, st := w.operator(r)
	switch {
	case st == ownSession:
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	case w.configuredPage(rw, nil), w.headGone(rw, nil):
		return
	case st == otherSession:
		w.otherSessionPage(rw)
		return
	}
	v := w.view("Sign in", stepSignIn, nil)
	v.CSRF = loginToken(rw, r)
	w.render(rw, http.StatusOK, "login", v)
}

func (w *Wizard) postLogin(rw http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(rw, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(rw, "bad form", http.StatusBadRequest)
		return
	}
	_, st := w.operator(r)
	switch {
	case st == ownSession:
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	case w.configuredPage(rw, nil), w.headGone(rw, nil):
		return
	case st == otherSession:
		// Not even a code check: a second browser cannot guess codes.
		w.otherSessionPage(rw)
		return
	}
	v := w.view("Sign in", stepSignIn, nil)
	if !checkLoginToken(r) {
		v.CSRF = loginToken(rw, r)
		v.Error = "The form was refused: it did not come from this page. Type the code again."
		w.render(rw, http.StatusForbidden, "login", v)
		return
	}
	if err := w.codes.Check(r.PostFormValue("code")); err != nil {
		w.log.Info("wizard: wrong setup code", "remote", r.RemoteAddr, "err", err)
		v.CSRF = loginToken(rw, r)
		switch {
		case errors.Is(err, pairing.ErrWrongCode):
			v.Error = "Wrong setup code. Type the code this head's console shows; after 5 wrong codes it is replaced by a new one."
		case errors.Is(err, pairing.ErrCodeUsed):
			v.Error = "This head is paired already."
		default:
			v.Error = strings.ToUpper(err.Error()[:1]) + err.Error()[1:] + "."
		}
		w.render(rw, http.StatusUnauthorized, "login", v)
		return
	}
	if !w.startSession(rw, r) {
		w.otherSessionPage(rw)
		return
	}
	http.Redirect(rw, r, "/", http.StatusSeeOther)
}

func (w *Wizard) postLogout(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.endSession(rw, s)
	http.Redirect(rw, r, "/login", http.StatusSeeOther)
}

// getRoot sends the operator to where the setup stands.
func (w *Wizard) getRoot(rw http.ResponseWriter, r *http.Request, s *opSession) {
	if w.headGone(rw, s) {
		return
	}
	w.mu.Lock()
	sel, ini := w.sel, w.ini
	to := "/peers"
	switch {
	case ini != nil && ini.prog != nil && ini.prog.State == "done":
		to = "/summary"
	case ini != nil && ini.prog != nil:
		to = "/progress"
	case ini != nil && ini.config != nil:
		to = "/review"
	case ini != nil && ini.hwDone:
		to = "/site"
	case ini != nil:
		to = "/hardware"
	case sel != nil:
		to = "/peer-code"
	}
	w.mu.Unlock()
	http.Redirect(rw, r, to, http.StatusSeeOther)
}

// initiator returns the pairing the operator drives, or redirects.
func (w *Wizard) initiator(rw http.ResponseWriter, r *http.Request, s *opSession) *initiatorState {
	if w.headGone(rw, s) {
		return nil
	}
	w.mu.Lock()
	ini := w.ini
	w.mu.Unlock()
	if ini == nil {
		http.Redirect(rw, r, "/", http.StatusSeeOther)
	}
	return ini
}

type peerRow struct {
	ID, Addr, FP, Image string
	Mismatch, Typed     bool
}

type peersView struct {
	Peers      []peerRow
	Addr       string
	AddrErr    string
	Discovery  bool
	Selected   *peerRow
	CodeErr    string
	ImageLocal string
}

func (w *Wizard) peerRow(p Peer) peerRow {
	return peerRow{ID: p.ID, Addr: p.Addr, FP: FormatFingerprint(p.Fingerprint), Image: p.Image, Mismatch: p.Image != w.opts.ImageVersion, Typed: p.Typed}
}

func (w *Wizard) getPeers(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.renderPeers(rw, http.StatusOK, s, "", "", "")
}

func (w *Wizard) renderPeers(rw http.ResponseWriter, status int, s *opSession, addr, addrErr, banner string) {
	if w.headGone(rw, s) {
		return
	}
	w.mu.Lock()
	ini := w.ini
	w.mu.Unlock()
	if ini != nil {
		// Paired already: the peer list is behind us.
		w.message(rw, http.StatusOK, "Paired", s, messageView{Heading: "Paired with " + short(ini.peer.ID),
			Text: "This head is paired with the other head. Continue with the hardware, or start over.", Link: "/", LinkText: "Continue"})
		return
	}
	pv := peersView{Addr: addr, AddrErr: addrErr, Discovery: w.disc != nil, ImageLocal: w.opts.ImageVersion}
	for _, p := range w.disc.list() {
		pv.Peers = append(pv.Peers, w.peerRow(p))
	}
	v := w.view("Find the other head", stepPeers, s)
	v.Error, v.Data = banner, pv
	w.render(rw, status, "peers", v)
}

func (w *Wizard) postPeers(rw http.ResponseWriter, r *http.Request, s *opSession) {
	var p Peer
	if id := r.PostFormValue("peer"); id != "" {
		var ok bool
		if p, ok = w.disc.lookup(id); !ok {
			w.renderPeers(rw, http.StatusOK, s, "", "", "That head is no longer announcing itself. It may have been paired, or switched off.")
			return
		}
	} else {
		addr := strings.TrimSpace(r.PostFormValue("addr"))
		var err error
		if p, err = w.lookupPeer(r.Context(), addr, nil); err != nil {
			w.renderPeers(rw, http.StatusOK, s, addr, explain(err), "")
			return
		}
	}
	if p.Image != w.opts.ImageVersion {
		msg := explain(&pairing.VersionMismatchError{Local: w.opts.ImageVersion, Peer: p.Image})
		if p.Typed {
			w.renderPeers(rw, http.StatusOK, s, p.Addr, msg, "")
		} else {
			w.renderPeers(rw, http.StatusOK, s, "", "", msg)
		}
		return
	}
	w.mu.Lock()
	w.sel = &p
	w.mu.Unlock()
	http.Redirect(rw, r, "/peer-code", http.StatusSeeOther)
}

func (w *Wizard) getPeerCode(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.renderPeerCode(rw, r, http.StatusOK, s, "")
}

func (w *Wizard) renderPeerCode(rw http.ResponseWriter, r *http.Request, status int, s *opSession, codeErr string) {
	if w.headGone(rw, s) {
		return
	}
	w.mu.Lock()
	sel := w.sel
	w.mu.Unlock()
	if sel == nil {
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	}
	row := w.peerRow(*sel)
	v := w.view("Pair with the other head", stepPair, s)
	v.Data = peersView{Selected: &row, CodeErr: codeErr}
	w.render(rw, status, "peercode", v)
}

func (w *Wizard) postPeerCode(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.mu.Lock()
	sel := w.sel
	w.mu.Unlock()
	if sel == nil {
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	}
	if err := w.pairWith(r.Context(), *sel, r.PostFormValue("code")); err != nil {
		w.log.Info("wizard: pairing as initiator failed", "peer", sel.ID, "err", err)
		w.renderPeerCode(rw, r, http.StatusOK, s, explain(err))
		return
	}
	http.Redirect(rw, r, "/hardware", http.StatusSeeOther)
}

func (w *Wizard) postStartOver(rw http.ResponseWriter, r *http.Request, s *opSession) {
	if err := w.startOver(r.Context()); err != nil {
		w.message(rw, http.StatusConflict, "Busy", s, messageView{Heading: "Not now", Text: err.Error(), Link: "/", LinkText: "Back"})
		return
	}
	http.Redirect(rw, r, "/peers", http.StatusSeeOther)
}

type nicRow struct {
	Name, MAC, Speed, Addrs string
	Link, Mgmt, Repl        bool
}

type diskRow struct {
	Serial, Model, Size, Signature string
	Selected, Destroy, System      bool
	Errs                           []string
}

type hwHead struct {
	Index              int
	Title, ID, Addr    string
	NICs               []nicRow
	Disks              []diskRow
	MgmtErr, ReplErr   []string
	DiskErr            []string
	SelectedDiskCount  int
	SelectedDiskFormat string
}

type hwView struct {
	Heads   [2]hwHead
	General []string
}

func (w *Wizard) hwView(ini *initiatorState, fe fieldErrors) hwView {
	var hv hwView
	for h := range 2 {
		n := ini.in.Nodes[h]
		hs := strconv.Itoa(h)
		head := hwHead{Index: h, ID: n.HeadID, Title: "This head", Addr: "", MgmtErr: fe["hw"+hs+".mgmt"], ReplErr: fe["hw"+hs+".repl"], DiskErr: fe["hw"+hs+".disk"]}
		if h == 1 {
			head.Title, head.Addr = "Other head", ini.peer.Addr
		}
		for _, c := range ini.hw[h].NICs {
			head.NICs = append(head.NICs, nicRow{Name: c.Name, MAC: c.MAC, Speed: humanSpeed(c.SpeedMbps), Addrs: strings.Join(c.Addrs, ", "),
				Link: c.Link, Mgmt: c.Name == n.MgmtNIC, Repl: contains(n.Links, c.Name)})
		}
		for _, d := range ini.hw[h].Disks {
			head.Disks = append(head.Disks, diskRow{Serial: d.Serial, Model: d.Model, Size: HumanSize(d.SizeBytes), Signature: d.Signature,
				Selected: contains(n.Disks, d.Serial), Destroy: contains(n.Destroy, d.Serial), System: d.System, Errs: fe["hw"+hs+".disk:"+d.Serial]})
		}
		head.SelectedDiskCount = len(n.Disks)
		hv.Heads[h] = head
	}
	hv.General = fe[""]
	return hv
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (w *Wizard) getHardware(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.initiator(rw, r, s)
	if ini == nil {
		return
	}
	w.mu.Lock()
	hv := w.hwView(ini, fieldErrors{})
	w.mu.Unlock()
	v := w.view("Hardware", stepHardware, s)
	v.Data = hv
	w.render(rw, http.StatusOK, "hardware", v)
}

func (w *Wizard) postHardware(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.initiator(rw, r, s)
	if ini == nil {
		return
	}
	w.mu.Lock()
	if ini.creating {
		w.mu.Unlock()
		http.Redirect(rw, r, "/progress", http.StatusSeeOther)
		return
	}
	fe := hardwareForm(r, &ini.in, ini.hw)
	// The site package checks the hardware choices too (two links, an
	// even number of disks, ...): its words for those, on this page.
	_, sfe, err := validate(&ini.in, ini.pairKey)
	if err == nil {
		for f, msgs := range sfe {
			if strings.HasPrefix(f, "hw") {
				for _, m := range msgs {
					if !contains(fe[f], m) {
						fe.add(f, m)
					}
				}
			}
		}
	}
	ini.config = nil
	ok := len(fe) == 0 && err == nil
	ini.hwDone = ok
	hv := w.hwView(ini, fe)
	w.mu.Unlock()
	w.onOrAgain(rw, r, s, ok, "/site", formPage{"Hardware", stepHardware, "hardware", hv,
		"Some choices need another look; see the notes in red."}, err)
}

// formPage is a form page to show again, with what to say on top.
type formPage struct {
	title string
	step  int
	page  string
	data  any
	msg   string
}

// onOrAgain goes on to next when a form was accepted, else shows its page
// again with its notes: msg, or err's own words.
func (w *Wizard) onOrAgain(rw http.ResponseWriter, r *http.Request, s *opSession, ok bool, next string, p formPage, err error) {
	if ok {
		http.Redirect(rw, r, next, http.StatusSeeOther)
		return
	}
	v := w.view(p.title, p.step, s)
	v.Data, v.Error = p.data, p.msg
	if err != nil {
		v.Error = err.Error()
	}
	w.render(rw, http.StatusUnprocessableEntity, p.page, v)
}

type siteView struct {
	In       siteInput
	Errs     fieldErrors
	General  []string
	HWErrs   []string
	Heads    [2]string
	PeerAddr string
}

func (w *Wizard) siteView(ini *initiatorState, fe fieldErrors) siteView {
	sv := siteView{In: ini.in, Errs: fe, General: fe[""], Heads: [2]string{short(ini.in.Nodes[0].HeadID), short(ini.in.Nodes[1].HeadID)}, PeerAddr: ini.peer.Addr}
	for f, msgs := range fe {
		if strings.HasPrefix(f, "hw") {
			sv.HWErrs = append(sv.HWErrs, msgs...)
		}
	}
	return sv
}

func (w *Wizard) getSite(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.initiator(rw, r, s)
	if ini == nil {
		return
	}
	w.mu.Lock()
	if !ini.hwDone {
		w.mu.Unlock()
		http.Redirect(rw, r, "/hardware", http.StatusSeeOther)
		return
	}
	sv := w.siteView(ini, fieldErrors{})
	w.mu.Unlock()
	v := w.view("Site settings", stepSite, s)
	v.Data = sv
	w.render(rw, http.StatusOK, "site", v)
}

func (w *Wizard) postSite(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.initiator(rw, r, s)
	if ini == nil {
		return
	}
	w.mu.Lock()
	if ini.creating || !ini.hwDone {
		w.mu.Unlock()
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	}
	siteForm(r, &ini.in)
	cfg, fe, err := validate(&ini.in, ini.pairKey)
	ini.config, ini.public = nil, nil
	if err == nil && len(fe) == 0 {
		ini.config = cfg
		ini.public, err = ini.in.build(nil)
	}
	sv := w.siteView(ini, fe)
	ok := ini.config != nil && err == nil
	w.mu.Unlock()
	w.onOrAgain(rw, r, s, ok, "/review", formPage{"Site settings", stepSite, "site", sv,
		"The site config does not pass validation yet; the notes in red say why, in the words of tandem validate."}, err)
}

type reviewView struct {
	In       siteInput
	Public   string
	PeerAddr string
	Prog     *progress
	Destroy  [2][]string
}

func (w *Wizard) getReview(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.initiator(rw, r, s)
	if ini == nil {
		return
	}
	w.mu.Lock()
	if ini.config == nil {
		w.mu.Unlock()
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	}
	rv := reviewView{In: ini.in, Public: string(ini.public), PeerAddr: ini.peer.Addr}
	w.mu.Unlock()
	v := w.view("Review and create", stepCreate, s)
	v.Data = rv
	w.render(rw, http.StatusOK, "review", v)
}

func (w *Wizard) postCreate(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.initiator(rw, r, s)
	if ini == nil {
		return
	}
	if err := w.startCreate(ini); err != nil {
		w.log.Info("wizard: create", "err", err)
	}
	http.Redirect(rw, r, "/progress", http.StatusSeeOther)
}

// progressOf returns a copy of the create progress.
func (w *Wizard) progressOf(ini *initiatorState) *progress {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ini.prog == nil {
		return nil
	}
	p := *ini.prog
	p.Steps = append([]progStep(nil), ini.prog.Steps...)
	return &p
}

// finished is the initiator after its commit: the summary is still its
// operator's to see.
func (w *Wizard) finished(rw http.ResponseWriter, r *http.Request, s *opSession) *initiatorState {
	w.mu.Lock()
	ini := w.ini
	w.mu.Unlock()
	if ini == nil {
		if !w.headGone(rw, s) {
			http.Redirect(rw, r, "/", http.StatusSeeOther)
		}
		return nil
	}
	return ini
}

func (w *Wizard) getProgress(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.finished(rw, r, s)
	if ini == nil {
		return
	}
	p := w.progressOf(ini)
	if p == nil {
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	}
	v := w.view("Creating the pair", stepCreate, s)
	v.Data = reviewView{In: ini.in, PeerAddr: ini.peer.Addr, Prog: p}
	w.render(rw, http.StatusOK, "progress", v)
}

func (w *Wizard) getProgressJSON(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.mu.Lock()
	ini := w.ini
	w.mu.Unlock()
	if ini == nil {
		writeJSON(rw, http.StatusNotFound, apiError{codeBad, "no pair is being created"})
		return
	}
	p := w.progressOf(ini)
	if p == nil {
		writeJSON(rw, http.StatusNotFound, apiError{codeBad, "no pair is being created"})
		return
	}
	writeJSON(rw, http.StatusOK, p)
}

func (w *Wizard) postConfirm(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.finished(rw, r, s)
	if ini == nil {
		return
	}
	if err := w.retryConfirm(ini); err != nil {
		w.log.Info("wizard: confirm again", "err", err)
	}
	http.Redirect(rw, r, "/progress", http.StatusSeeOther)
}

type summaryView struct {
	In        siteInput
	PeerAddr  string
	Witness   string
	Command   string
	Serving   bool
	Committed bool
}

func (w *Wizard) getSummary(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.finished(rw, r, s)
	if ini == nil {
		return
	}
	w.mu.Lock()
	committed := w.phase == phaseConfigured
	sv := summaryView{In: ini.in, PeerAddr: ini.peer.Addr, Committed: committed, Serving: ini.prog != nil && ini.prog.State == "done"}
	w.mu.Unlock()
	if !committed {
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	}
	sv.Command = witnessCommand(sv.In)
	v := w.view("Done", stepDone, s)
	v.Data = sv
	w.render(rw, http.StatusOK, "summary", v)
}

// witnessCommand starts the witness on the third host, if the pair has
// one (not a ping target).
func witnessCommand(in siteInput) string {
	if in.Witness == "ping" {
		return ""
	}
	return "tandem witness --config witness.toml --init"
}

// getSiteTOML is the operator's copy of the site config, without the
// pair key.
func (w *Wizard) getSiteTOML(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.finished(rw, r, s)
	if ini == nil {
		return
	}
	w.mu.Lock()
	pub := ini.public
	w.mu.Unlock()
	if pub == nil {
		http.Redirect(rw, r, "/", http.StatusSeeOther)
		return
	}
	rw.Header().Set("Content-Type", "application/toml; charset=utf-8")
	rw.Header().Set("Content-Disposition", `attachment; filename="site.toml"`)
	rw.Write(pub)
}

var _ = json.Marshal
var _ = context.Background
