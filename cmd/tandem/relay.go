package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"tandem.dev/tandem/wizard"
)

// tandem relay-pairing is a LAB ATTACKER TOOL, like guess-codes: a man
// in the middle between two unconfigured heads (docs/pairing.md, threat
// model). It terminates TLS on both sides with a certificate of its own
// (it holds no head's key), relays each pairing request to head B and
// each answer back, and logs them to stderr. The operator it fools types
// its address as head B's. It must never pair the heads: the scenarios
// check that both heads refuse, and say why.
//
// Alterations (--alter):
//   - none: a pure relay. The initiator pins the relay's certificate,
//     head B sees the relay's client certificate, and each head claims
//     its own in the exchange.
//   - fingerprints: the relay replaces each head's certificate
//     fingerprint in the pairing messages with its own, so that both
//     heads' "claim matches the connection" checks pass; only CPace's
//     binding of both certificates is left to stop it.
//   - flip: flips the last byte of each pairing message to head B.

// relayAlterations are --alter's values.
var relayAlterations = []string{"none", "fingerprints", "flip"}

func runRelayPairing(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("relay-pairing", flag.ContinueOnError)
	listen := fs.String("listen", ":443", "where to answer as head B")
	to := fs.String("to", "", "head B's wizard, host[:port] (required)")
	alter := fs.String("alter", "none", "what to change on the way: "+strings.Join(relayAlterations, ", "))
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *to == "" || fs.NArg() > 0 {
		return usageError{errors.New("usage: tandem relay-pairing [--listen :443] --to HEAD_B[:PORT] [--alter none|fingerprints|flip]")}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	r, err := newPairingRelay(*to, *alter, log)
	if err != nil {
		return usageError{err}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("relay-pairing: a man in the middle, lab only", "listen", ln.Addr().String(), "to", r.to,
		"alter", r.alter, "certificate", wizard.FormatFingerprint(r.fp))
	return r.serve(ctx, ln)
}

// pairingRelay answers as head B with its own certificate and passes
// each request on to the real head B.
type pairingRelay struct {
	to, alter string
	cert      tls.Certificate
	fp        []byte // its own certificate's SHA-256
	log       *slog.Logger
	hc        *http.Client

	mu  sync.Mutex
	fpB []byte // head B's certificate, once seen
}

func newPairingRelay(to, alter string, log *slog.Logger) (*pairingRelay, error) {
	to, err := wizard.NormalizeAddr(to)
	if err != nil {
		return nil, fmt.Errorf("--to: %w", err)
	}
	ok := false
	for _, a := range relayAlterations {
		ok = ok || a == alter
	}
	if !ok {
		return nil, fmt.Errorf("--alter %q: one of %s", alter, strings.Join(relayAlterations, ", "))
	}
	cert, err := relayCert()
	if err != nil {
		return nil, err
	}
	fp := sha256.Sum256(cert.Certificate[0])
	r := &pairingRelay{to: to, alter: alter, cert: cert, fp: fp[:], log: log}
	r.hc = &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		Proxy: nil,
		TLSClientConfig: &tls.Config{
			// Head B sees the relay's certificate as the client's.
			Certificates:       []tls.Certificate{cert},
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) > 0 {
					fp := sha256.Sum256(cs.PeerCertificates[0].Raw)
					r.mu.Lock()
					r.fpB = fp[:]
					r.mu.Unlock()
				}
				return nil
			},
		},
	}}
	return r, nil
}

// relayCert is a throwaway self-signed certificate.
func relayCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "not a Tandem head"},
		NotBefore:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func (r *pairingRelay) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelDebug)}
	tl := tls.NewListener(ln, &tls.Config{
		Certificates: []tls.Certificate{r.cert},
		ClientAuth:   tls.RequestClientCert, // to learn the initiator's certificate
	})
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(tl); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ctx.Err()
}

func (r *pairingRelay) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 2<<20))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	var fpA []byte
	if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
		h := sha256.Sum256(req.TLS.PeerCertificates[0].Raw)
		fpA = h[:]
	}
	pairingMsg := req.Method == http.MethodPost && req.Header.Get("Content-Type") == "application/octet-stream"
	sent, alteredReq := body, false
	if pairingMsg {
		sent, alteredReq = r.alterBody(body, fpA, false)
	}
	var rd io.Reader
	if req.Method == http.MethodPost {
		rd = bytes.NewReader(sent)
	}
	out, err := http.NewRequestWithContext(req.Context(), req.Method, "https://"+r.to+req.URL.RequestURI(), rd)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		out.Header.Set("Content-Type", ct)
	}
	resp, err := r.hc.Do(out)
	if err != nil {
		r.log.Info("relay-pairing: head B does not answer", "path", req.URL.Path, "err", err)
		http.Error(rw, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 2<<20))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadGateway)
		return
	}
	alteredResp := false
	if resp.Header.Get("Content-Type") == "application/octet-stream" {
		answer, alteredResp = r.alterBody(answer, fpA, true)
	}
	for _, h := range []string{"Content-Type", "Tandem-Pairing-Session", "Tandem-Pairing-Abort"} {
		if v := resp.Header.Get(h); v != "" {
			rw.Header().Set(h, v)
		}
	}
	rw.WriteHeader(resp.StatusCode)
	rw.Write(answer)
	attrs := []any{"from", req.RemoteAddr, "method", req.Method, "path", req.URL.Path, "bytes", len(body),
		"altered", alteredReq, "status", resp.StatusCode, "answer_bytes", len(answer), "answer_altered", alteredResp}
	if resp.Header.Get("Content-Type") != "application/octet-stream" {
		attrs = append(attrs, "answer", strings.TrimSpace(string(answer[:min(len(answer), 300)])))
	}
	r.log.Info("relay-pairing: relayed", attrs...)
}

// alterBody changes a pairing message as --alter says: toA is an answer
// on its way to the initiator, fpA the initiator's client certificate.
func (r *pairingRelay) alterBody(b, fpA []byte, toA bool) ([]byte, bool) {
	switch r.alter {
	case "fingerprints":
		// The fingerprints are raw SHA-256 fields: same length, so the
		// message's encoding stays valid.
		r.mu.Lock()
		old := r.fpB
		r.mu.Unlock()
		if !toA {
			old = fpA
		}
		if len(old) == len(r.fp) && bytes.Contains(b, old) {
			return bytes.ReplaceAll(b, old, r.fp), true
		}
	case "flip":
		if !toA && len(b) > 0 {
			b = bytes.Clone(b)
			b[len(b)-1] ^= 0x01
			return b, true
		}
	}
	return b, false
}
