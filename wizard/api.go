package wizard

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"tandem.dev/tandem/pairing"
	"tandem.dev/tandem/site"
)

// The JSON API under /api/ is what `tandem pair` (cmd/tandem/pair.go,
// through Client) drives instead of a browser: the same steps on the
// same internal functions, under the same rules.
//
//   - Sign in with this head's setup code: the same Codes, so wrong codes
//     count toward the same burn of 5.
//   - One operator at a time: a tandem pair session and a browser
//     session exclude each other, and while one lasts the other cannot
//     even type a code.
//   - The session token is a bearer token in the Authorization header,
//     never a cookie, and the pages' cookie never opens the API: a
//     browser does not send the token on its own, so no other site can
//     act with it (what the pages' CSRF tokens are for). Every POST must
//     be application/json, which no cross-site form can send without a
//     CORS preflight that this server never answers, so no other site
//     can make a browser type codes either.

// API error codes: what went wrong, for the client to word.
const (
	apiNoSession     = "no-session"    // sign in (again)
	apiOtherSession  = "other-session" // another browser or tandem pair is signed in
	apiConfigured    = "configured"
	apiBeingPaired   = "being-paired" // another head pairs this one
	apiWrongCode     = "wrong-code"
	apiCodeBurned    = "code-burned"
	apiCodeExpired   = "code-expired"
	apiCodeUsed      = "code-used"
	apiCodeFormat    = "code-format"
	apiBadRequest    = "bad-request"
	apiNotPaired     = "not-paired"
	apiPaired        = "paired" // paired already: start over first
	apiBusy          = "busy"   // creating, or another pairing in progress
	apiPeerNoAnswer  = "peer-unreachable"
	apiPeerCert      = "peer-fingerprint"
	apiImageVersion  = "image-version"
	apiPeerWrongCode = "peer-wrong-code"
	apiPeerBurned    = "peer-code-burned"
	apiPeerExpired   = "peer-code-expired"
	apiPeerUsed      = "peer-code-used"
	apiPeerBusy      = "peer-busy"
	apiPeerConfig    = "peer-configured"
	apiPairingFailed = "pairing-failed"
	apiInvalidConfig = "invalid-config"
	apiNotCommitted  = "not-committed"
)

// apiMaxBody bounds a request: a site config is at most site.MaxSize,
// JSON-escaped.
const apiMaxBody = 2*site.MaxSize + 64<<10

type apiFailure struct {
	Code         string       `json:"code"`
	Error        string       `json:"error"`
	AttemptsLeft int          `json:"attempts_left,omitempty"`
	Fingerprint  string       `json:"fingerprint,omitempty"` // the peer's certificate, when it is not the one given
	Problems     []apiProblem `json:"problems,omitempty"`
}

// apiProblem is one problem in the operator's site config, located in
// the operator's file.
type apiProblem struct {
	Line int    `json:"line"`
	Col  int    `json:"col"`
	Path string `json:"path,omitempty"`
	Msg  string `json:"msg"`
}

// APIHead is a head as the API names it.
type APIHead struct {
	ID          string `json:"id"`
	Addr        string `json:"addr,omitempty"`
	Fingerprint string `json:"fingerprint"` // hex
	Image       string `json:"image"`
}

type apiLoginRequest struct {
	Code string `json:"code"`
}

// APISignIn answers a sign-in.
type APISignIn struct {
	Token string  `json:"token"`
	Head  APIHead `json:"head"`
	// Setup is where this head's setup stands: "free", "paired" (with
	// Peer), or the create progress's state.
	Setup string   `json:"setup"`
	Peer  *APIHead `json:"peer,omitempty"`
}

type apiPairRequest struct {
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint,omitempty"` // the peer's, if the operator has it
	Code        string `json:"code"`
}

// APIHardware is both heads' hardware, once paired.
type APIHardware struct {
	Heads    [2]APIHead  `json:"heads"` // this head, the peer
	Hardware [2]Hardware `json:"hardware"`
}

type apiSiteRequest struct {
	Config  string   `json:"config"`  // site.toml without the pair key
	Destroy []string `json:"destroy"` // "serial:..." of disks that hold data and may be overwritten
}

// APINode is a [[node]] of the site config and the head it runs on.
type APINode struct {
	Name    string   `json:"name"`
	Head    APIHead  `json:"head"`
	Disks   []string `json:"disks"`
	Destroy []string `json:"destroy,omitempty"`
}

// APISite answers an accepted site config.
type APISite struct {
	Nodes [2]APINode `json:"nodes"`
}

// APISummary is what to note down once both heads committed.
type APISummary struct {
	Pair           string     `json:"pair"`
	Nodes          [2]APINode `json:"nodes"`
	SiteTOML       string     `json:"site_toml"` // without the pair key
	Witness        string     `json:"witness,omitempty"`
	PingTarget     string     `json:"ping_target,omitempty"`
	WitnessCommand string     `json:"witness_command,omitempty"`
	Serving        bool       `json:"serving"`
}

func (w *Wizard) routeAPI(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/login", w.apiLogin)
	mux.HandleFunc("POST /api/logout", w.api(w.apiLogout))
	mux.HandleFunc("POST /api/pair", w.api(w.apiPair))
	mux.HandleFunc("GET /api/hardware", w.api(w.apiHardware))
	mux.HandleFunc("POST /api/site", w.api(w.apiSite))
	mux.HandleFunc("POST /api/create", w.api(w.apiCreate))
	mux.HandleFunc("GET /api/progress", w.api(w.apiProgress))
	mux.HandleFunc("POST /api/confirm", w.api(w.apiConfirm))
	mux.HandleFunc("POST /api/start-over", w.api(w.apiStartOver))
	mux.HandleFunc("GET /api/summary", w.api(w.apiSummary))
}

func apiFail(rw http.ResponseWriter, status int, code, msg string) {
	writeJSON(rw, status, apiFailure{Code: code, Error: msg})
}

func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

func decodeJSON(rw http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		apiFail(rw, http.StatusBadRequest, apiBadRequest, "the request is not the JSON this API takes: "+err.Error())
		return false
	}
	return true
}

// apiOperator is operator for tandem pair: the session's token comes as
// a bearer token, and only a bearer session's token counts.
func (w *Wizard) apiOperator(r *http.Request) (*opSession, sessionState) {
	now := w.opts.Now()
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.op != nil && w.op.expired(now, w.opts.SessionIdle) {
		w.op = nil
	}
	if w.op == nil {
		return nil, noSession
	}
	if !w.op.bearer || !equalToken(token, w.op.token) {
		return nil, otherSession
	}
	w.op.last = now
	return w.op, ownSession
}

func (w *Wizard) apiOtherSession(rw http.ResponseWriter) {
	w.mu.Lock()
	who, since := "a browser", time.Time{}
	if w.op != nil {
		if w.op.bearer {
			who = "tandem pair"
		}
		who += " on " + w.op.remote
		since = w.op.created
	}
	w.mu.Unlock()
	apiFail(rw, http.StatusConflict, apiOtherSession, fmt.Sprintf(
		"another session is in progress: this head is being set up from %s, signed in at %s. One operator at a time: finish there, or wait %s for that session to idle out",
		who, since.Format("15:04"), w.opts.SessionIdle.Round(time.Minute)))
}

// api guards every endpoint but the sign-in, as page does the pages.
func (w *Wizard) api(h func(http.ResponseWriter, *http.Request, *opSession)) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && !isJSON(r) {
			apiFail(rw, http.StatusUnsupportedMediaType, apiBadRequest, "send application/json")
			return
		}
		s, st := w.apiOperator(r)
		switch st {
		case noSession:
			apiFail(rw, http.StatusUnauthorized, apiNoSession, "not signed in, or the session ended: sign in with the head's setup code")
			return
		case otherSession:
			w.apiOtherSession(rw)
			return
		}
		r.Body = http.MaxBytesReader(rw, r.Body, apiMaxBody)
		h(rw, r, s)
	}
}

// apiGone refuses while the head is not the operator's to set up.
func (w *Wizard) apiGone(rw http.ResponseWriter) bool {
	m, configured, gone := w.gone()
	switch {
	case gone && configured:
		apiFail(rw, http.StatusConflict, apiConfigured, m.Heading+". "+m.Text)
	case gone:
		apiFail(rw, http.StatusConflict, apiBeingPaired, m.Heading+". "+m.Text)
	}
	return gone
}

func (w *Wizard) selfHead() APIHead {
	return APIHead{ID: w.id.ID, Fingerprint: hex.EncodeToString(w.id.Fingerprint), Image: w.opts.ImageVersion}
}

func peerHead(p Peer) APIHead {
	return APIHead{ID: p.ID, Addr: p.Addr, Fingerprint: hex.EncodeToString(p.Fingerprint), Image: p.Image}
}

func (w *Wizard) apiLogin(rw http.ResponseWriter, r *http.Request) {
	if !isJSON(r) {
		apiFail(rw, http.StatusUnsupportedMediaType, apiBadRequest, "send application/json")
		return
	}
	r.Body = http.MaxBytesReader(rw, r.Body, 4<<10)
	var req apiLoginRequest
	if !decodeJSON(rw, r, &req) || w.apiGone(rw) {
		return
	}
	if _, st := w.apiOperator(r); st != noSession {
		// Not even a code check: a second client cannot guess codes.
		w.apiOtherSession(rw)
		return
	}
	if err := w.codes.Check(req.Code); err != nil {
		w.log.Info("wizard: wrong setup code", "remote", r.RemoteAddr, "err", err, "tandem_pair", true)
		var wc *pairing.WrongCodeError
		switch {
		case errors.As(err, &wc):
			writeJSON(rw, http.StatusUnauthorized, apiFailure{Code: apiWrongCode, AttemptsLeft: wc.Left,
				Error: fmt.Sprintf("wrong setup code: type the code this head's console shows; %d more wrong codes burn it", wc.Left)})
		case errors.Is(err, pairing.ErrCodeBurned):
			apiFail(rw, http.StatusUnauthorized, apiCodeBurned, "wrong setup code, the 5th: the code is burned, and the head's console shows a new one")
		case errors.Is(err, pairing.ErrCodeExpired):
			apiFail(rw, http.StatusUnauthorized, apiCodeExpired, err.Error())
		case errors.Is(err, pairing.ErrCodeUsed):
			apiFail(rw, http.StatusConflict, apiCodeUsed, "this head is paired already")
		case errors.Is(err, pairing.ErrCodeFormat):
			apiFail(rw, http.StatusBadRequest, apiCodeFormat, err.Error())
		default:
			apiFail(rw, http.StatusInternalServerError, apiBadRequest, err.Error())
		}
		return
	}
	s := w.newSession(r, true)
	if s == nil {
		w.apiOtherSession(rw)
		return
	}
	reply := APISignIn{Token: s.token, Head: w.selfHead(), Setup: "free"}
	w.mu.Lock()
	if ini := w.ini; ini != nil {
		p := peerHead(ini.peer)
		reply.Peer, reply.Setup = &p, "paired"
		if ini.prog != nil {
			reply.Setup = ini.prog.State
		}
	}
	w.mu.Unlock()
	writeJSON(rw, http.StatusOK, reply)
}

func (w *Wizard) apiLogout(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.mu.Lock()
	if w.op == s {
		w.op = nil
	}
	w.mu.Unlock()
	rw.WriteHeader(http.StatusNoContent)
}

// apiPair pairs this head with the peer at an address by the peer's
// code: the pages' "Other head" and "Pair" steps in one.
func (w *Wizard) apiPair(rw http.ResponseWriter, r *http.Request, s *opSession) {
	var req apiPairRequest
	if !decodeJSON(rw, r, &req) || w.apiGone(rw) {
		return
	}
	var pin []byte
	if req.Fingerprint != "" {
		var err error
		if pin, err = ParseFingerprint(req.Fingerprint); err != nil {
			apiFail(rw, http.StatusBadRequest, apiBadRequest, err.Error())
			return
		}
	}
	w.mu.Lock()
	ini := w.ini
	w.mu.Unlock()
	if ini != nil {
		apiFail(rw, http.StatusConflict, apiPaired, fmt.Sprintf("this head is paired with head %s (%s) already; start over first", short(ini.peer.ID), ini.peer.Addr))
		return
	}
	p, err := w.lookupPeer(r.Context(), req.Addr, pin)
	if err == nil {
		err = w.pairWith(r.Context(), p, req.Code)
	}
	if err != nil {
		w.log.Info("wizard: pairing as initiator failed", "addr", req.Addr, "err", err, "tandem_pair", true)
		w.apiPairFailed(rw, err)
		return
	}
	w.apiHardware(rw, r, s)
}

// apiPairFailed says why pairing failed, in the pages' words.
func (w *Wizard) apiPairFailed(rw http.ResponseWriter, err error) {
	f := apiFailure{Code: apiPairingFailed, Error: explain(err)}
	status := http.StatusConflict
	var fe *fingerprintError
	var pe *peerError
	switch {
	case errors.As(err, &fe):
		f.Code, f.Fingerprint = apiPeerCert, hex.EncodeToString(fe.seen)
		f.Error = "the other head's TLS certificate is not the one given: it shows SHA-256 " + FormatFingerprint(fe.seen) + ". Its setup code was not sent"
	case errors.Is(err, errNoPeer):
		f.Code, status = apiPeerNoAnswer, http.StatusBadGateway
		f.Error = err.Error()
	case errors.Is(err, pairing.ErrImageVersion):
		f.Code = apiImageVersion
	case errors.Is(err, pairing.ErrCodeFormat):
		f.Code, status = apiCodeFormat, http.StatusBadRequest
	case errors.Is(err, pairing.ErrKeyConfirmation):
		f.Code, status = apiPeerWrongCode, http.StatusUnauthorized
	case errors.Is(err, pairing.ErrCodeBurned):
		f.Code = apiPeerBurned
	case errors.Is(err, pairing.ErrCodeExpired):
		f.Code = apiPeerExpired
	case errors.Is(err, pairing.ErrCodeUsed):
		f.Code = apiPeerUsed
	case errors.Is(err, errBusy):
		f.Code = apiBusy
	case errors.As(err, &pe) && pe.Code == codeBusy:
		f.Code = apiPeerBusy
	case errors.As(err, &pe) && pe.Code == codeConfigured:
		f.Code = apiPeerConfig
	}
	writeJSON(rw, status, f)
}

// apiIni is the pairing this head drives, or a refusal.
func (w *Wizard) apiIni(rw http.ResponseWriter) *initiatorState {
	if w.apiGone(rw) {
		return nil
	}
	w.mu.Lock()
	ini := w.ini
	w.mu.Unlock()
	if ini == nil {
		apiFail(rw, http.StatusConflict, apiNotPaired, "this head is not paired with another head yet")
	}
	return ini
}

func (w *Wizard) apiHardware(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.apiIni(rw)
	if ini == nil {
		return
	}
	// ini.peer and ini.hw are set before ini is published, never after.
	writeJSON(rw, http.StatusOK, APIHardware{Heads: [2]APIHead{w.selfHead(), peerHead(ini.peer)}, Hardware: ini.hw})
}

// apiSite takes the operator's site.toml (a template: no pair key) and
// checks it as the site page checks its form: the site package's
// validation (on the config with the key in, as the heads will read it)
// and each head's hardware choices (pick). Nothing is staged here.
func (w *Wizard) apiSite(rw http.ResponseWriter, r *http.Request, s *opSession) {
	var req apiSiteRequest
	if !decodeJSON(rw, r, &req) {
		return
	}
	ini := w.apiIni(rw)
	if ini == nil {
		return
	}
	w.mu.Lock()
	creating, key, hw, nodes := ini.creating, ini.pairKey, ini.hw, ini.in.Nodes
	peerAddr := ini.peer.Addr
	w.mu.Unlock()
	if creating {
		apiFail(rw, http.StatusConflict, apiBusy, "the pair is being created already")
		return
	}
	tmpl := []byte(req.Config)
	cfg, sc, ix, err := completeTemplate(configName, tmpl, key)
	if err != nil {
		var verrs site.ValidationErrors
		var one *site.Error
		f := apiFailure{Code: apiInvalidConfig, Error: "the site config does not pass validation"}
		switch {
		case errors.As(err, &verrs):
		case errors.As(err, &one):
			verrs = site.ValidationErrors{one}
		default:
			apiFail(rw, http.StatusInternalServerError, apiBadRequest, err.Error())
			return
		}
		for _, e := range verrs {
			f.Problems = append(f.Problems, apiProblem{Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Msg})
		}
		writeJSON(rw, http.StatusUnprocessableEntity, f)
		return
	}

	var confirm []string
	for _, d := range req.Destroy {
		confirm = append(confirm, strings.TrimPrefix(d, "serial:"))
	}
	var probs []apiProblem
	problem := func(path, format string, args ...any) {
		p, _ := ix.Lookup(path)
		probs = append(probs, apiProblem{Line: max(p.Line, 1), Col: max(p.Col, 1), Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	heads := [2]string{"head A (this head)", "head B (" + peerAddr + ")"}
	used := map[string]bool{}
	for h := range 2 {
		np := "node[" + strconv.Itoa(h) + "]"
		nd := sc.Nodes[h]
		c := hwChoice{Mgmt: nd.Management.Interface, Links: nd.Replication.Links, Confirm: confirm}
		mgmtPath := np + ".management.interface"
		if c.Mgmt == "" {
			c.Mgmt, mgmtPath = nd.Management.MAC, np+".management.mac"
		}
		diskPath, specs := np+".disks", nd.Disks
		if len(specs) == 0 {
			diskPath, specs = "storage.raid.disks", sc.Storage.RAID.Disks
		}
		var at []int // the spec behind each of c.Disks
		for i, d := range specs {
			sn, ok := strings.CutPrefix(d, "serial:")
			if !ok {
				problem(fmt.Sprintf("%s[%d]", diskPath, i), "the wizard knows %s's disks by serial: write serial:SERIAL (its disks: %s)", heads[h], diskList(hw[h]))
				continue
			}
			c.Disks, at = append(c.Disks, sn), append(at, i)
		}
		mgmt, links, disks, destroy, hp := hw[h].pick(c)
		for _, p := range hp {
			switch p.Kind {
			case probNoMgmt:
				problem(mgmtPath, "name the management interface (%s has %s)", heads[h], nicList(hw[h]))
			case probNoNIC:
				path := mgmtPath
				if p.Index >= 0 {
					path = fmt.Sprintf("%s.replication.links[%d]", np, p.Index)
				}
				problem(path, "%s has no interface %q; it has %s", heads[h], p.Name, nicList(hw[h]))
			case probNoDisk:
				problem(fmt.Sprintf("%s[%d]", diskPath, at[p.Index]), "%s has no disk with serial %q; its disks: %s", heads[h], p.Name, diskList(hw[h]))
			case probSystem:
				problem(fmt.Sprintf("%s[%d]", diskPath, at[p.Index]), "serial:%s is the disk %s boots from", p.Name, heads[h])
			case probData:
				problem(fmt.Sprintf("%s[%d]", diskPath, at[p.Index]), "serial:%s on %s holds data (%s): confirm that it may be overwritten (tandem pair --destroy-data serial:%s)", p.Name, heads[h], p.Signature, p.Name)
			}
		}
		for _, d := range disks {
			used[d] = true
		}
		nodes[h].Name, nodes[h].MgmtNIC, nodes[h].Links, nodes[h].Disks, nodes[h].Destroy = nd.Name, mgmt, links, disks, destroy
	}
	for _, d := range confirm {
		if !used[d] {
			probs = append(probs, apiProblem{Path: "destroy", Msg: fmt.Sprintf("serial:%s is not a disk this site config uses on either head; nothing is confirmed by it", d)})
		}
	}
	if len(probs) > 0 {
		slices.SortStableFunc(probs, func(a, b apiProblem) int { return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col)) })
		writeJSON(rw, http.StatusUnprocessableEntity, apiFailure{Code: apiInvalidConfig, Error: "the site config does not fit the heads' hardware", Problems: probs})
		return
	}

	// The heads' config: the operator's text, the key in, the wizard's
	// lines after it; the operator's copy leaves the key out.
	lines := wizardLines(nodes)
	config := append(withNewline(cfg), lines...)
	public := append(withNewline(tmpl), lines...)
	if _, err := resultFor(config, w.id.ID, "initiator"); err != nil {
		apiFail(rw, http.StatusInternalServerError, apiBadRequest, "the completed site config: "+err.Error())
		return
	}
	w.mu.Lock()
	if ini.creating || w.ini != ini {
		w.mu.Unlock()
		apiFail(rw, http.StatusConflict, apiBusy, "the pair is being created already, or the pairing was given up")
		return
	}
	templateInput(sc, &ini.in)
	for h, n := range nodes {
		in := &ini.in.Nodes[h]
		in.MgmtNIC, in.Links, in.Disks, in.Destroy = n.MgmtNIC, n.Links, n.Disks, n.Destroy
	}
	ini.hwDone, ini.config, ini.public = true, config, public
	w.mu.Unlock()
	reply := APISite{}
	for h := range 2 {
		reply.Nodes[h] = APINode{Name: nodes[h].Name, Disks: nodes[h].Disks, Destroy: nodes[h].Destroy}
	}
	reply.Nodes[0].Head, reply.Nodes[1].Head = w.selfHead(), peerHead(ini.peer)
	writeJSON(rw, http.StatusOK, reply)
}

func nicList(hw Hardware) string {
	var l []string
	for _, n := range hw.NICs {
		l = append(l, fmt.Sprintf("%s (%s)", n.Name, n.MAC))
	}
	return strings.Join(l, ", ")
}

func diskList(hw Hardware) string {
	var l []string
	for _, d := range hw.Disks {
		l = append(l, fmt.Sprintf("serial:%s (%s, %s)", d.Serial, HumanSize(d.SizeBytes), d.Contents()))
	}
	return strings.Join(l, ", ")
}

func (w *Wizard) apiCreate(rw http.ResponseWriter, r *http.Request, s *opSession) {
	ini := w.apiIni(rw)
	if ini == nil {
		return
	}
	if err := w.startCreate(ini); err != nil {
		apiFail(rw, http.StatusConflict, apiBusy, err.Error())
		return
	}
	writeJSON(rw, http.StatusAccepted, w.progressOf(ini))
}

func (w *Wizard) apiProgress(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.mu.Lock()
	ini := w.ini
	w.mu.Unlock()
	var p *progress
	if ini != nil {
		p = w.progressOf(ini)
	}
	if p == nil {
		apiFail(rw, http.StatusConflict, apiNotPaired, "no pair is being created")
		return
	}
	writeJSON(rw, http.StatusOK, p)
}

func (w *Wizard) apiConfirm(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.mu.Lock()
	ini := w.ini
	w.mu.Unlock()
	if ini == nil {
		apiFail(rw, http.StatusConflict, apiNotPaired, "no pair is being created")
		return
	}
	if err := w.retryConfirm(ini); err != nil {
		apiFail(rw, http.StatusConflict, apiBusy, err.Error())
		return
	}
	writeJSON(rw, http.StatusAccepted, w.progressOf(ini))
}

func (w *Wizard) apiStartOver(rw http.ResponseWriter, r *http.Request, s *opSession) {
	if err := w.startOver(r.Context()); err != nil {
		apiFail(rw, http.StatusConflict, apiBusy, err.Error())
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

func (w *Wizard) apiSummary(rw http.ResponseWriter, r *http.Request, s *opSession) {
	w.mu.Lock()
	ini := w.ini
	committed := w.phase == phaseConfigured
	var sum APISummary
	if ini != nil && committed {
		in := ini.in
		sum = APISummary{Pair: in.PairName, SiteTOML: string(ini.public), WitnessCommand: witnessCommand(in),
			Serving: ini.prog != nil && ini.prog.State == "done"}
		if in.Witness == "ping" {
			sum.PingTarget = in.PingTarget
		} else {
			sum.Witness = in.WitnessAddr
		}
		for h, n := range in.Nodes {
			sum.Nodes[h] = APINode{Name: n.Name, Disks: n.Disks, Destroy: n.Destroy}
		}
		sum.Nodes[0].Head, sum.Nodes[1].Head = w.selfHead(), peerHead(ini.peer)
	}
	w.mu.Unlock()
	if ini == nil || !committed {
		apiFail(rw, http.StatusConflict, apiNotCommitted, "the pair is not created yet")
		return
	}
	writeJSON(rw, http.StatusOK, sum)
}
