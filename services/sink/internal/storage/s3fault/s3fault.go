// Package s3fault is a loopback HTTP proxy in front of an S3 server that loses responses on
// purpose: it forwards a chosen request to the server, lets the server act on it, and then drops
// the response (closes the connection), resets the connection, or answers too late. That is the
// ambiguous outcome a client of real S3 meets after a network fault: the write happened, the
// client does not know it, and its SDK retries. Tests only.
package s3fault

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Fault is what happens to the response of the matched request.
type Fault int

const (
	// Drop forwards the request, then closes the client's connection without a response.
	Drop Fault = iota
	// Reset forwards the request, then resets the client's connection (TCP RST).
	Reset
	// Delay forwards the request and answers after Proxy.Delay (longer than the client waits).
	Delay
)

func (f Fault) String() string { return [...]string{"drop", "reset", "delay"}[f] }

// Proxy forwards every request to Target unchanged (the Host header too, so SigV4 signatures made
// for the proxy's address verify at the server), except the Nth request Match accepts, whose
// response suffers Fault.
type Proxy struct {
	Target string // the server, http://host:port
	Match  func(*http.Request) bool
	Nth    int // 1 = the first matching request
	Fault  Fault
	Delay  time.Duration // for Delay; default 3 s

	mu      sync.Mutex
	seen    int
	faulted []string // "METHOD path" of each request whose response was lost
	srv     *http.Server
	ln      net.Listener
}

// Start listens on a loopback port; URL is then the proxy's address.
func (p *Proxy) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	p.ln = ln
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return nil
}

// URL is the proxy's base URL.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }

// Faulted lists the requests whose responses were lost, "METHOD path" each.
func (p *Proxy) Faulted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.faulted...)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fault := false
	if p.Match != nil && p.Match(r) {
		p.mu.Lock()
		p.seen++
		if p.seen == p.Nth {
			fault = true
			p.faulted = append(p.faulted, r.Method+" "+r.URL.Path)
		}
		p.mu.Unlock()
	}
	out, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), r.Method, p.Target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host
	out.ContentLength = int64(len(body))
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(resp.Body)
	if fault {
		switch p.Fault {
		case Drop, Reset:
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				http.Error(w, fmt.Sprintf("s3fault: hijacking the connection: %v", err), http.StatusBadGateway)
				return
			}
			if tc, ok := conn.(*net.TCPConn); ok && p.Fault == Reset {
				_ = tc.SetLinger(0) // close sends RST
			}
			_ = conn.Close()
			return
		case Delay:
			d := p.Delay
			if d == 0 {
				d = 3 * time.Second
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done(): // the client gave up: nothing to answer
				t.Stop()
				return
			}
		}
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(respBody)
}
