// Package health serves a service's operational endpoints: /metrics (Prometheus), /healthz
// (liveness: the process is serving) and /readyz (readiness: every registered check passes).
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports why a service is not ready, or nil. It must return promptly once ctx is done.
type Check func(ctx context.Context) error

// CheckTimeout bounds each readiness check, so one hung dependency cannot hang /readyz.
const CheckTimeout = 2 * time.Second

// Server owns the metrics registry and the health endpoints of one service.
type Server struct {
	service  string
	registry *prometheus.Registry
	log      *slog.Logger

	mu       sync.Mutex
	checks   map[string]Check
	draining bool
	profile  bool
}

// EnableProfiling makes Handler also serve Go's profiler at /debug/pprof/. Off by default: it
// exposes goroutine stacks and a CPU profile costs CPU while it runs.
func (s *Server) EnableProfiling() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.profile = true
}

// New returns a server for service with a registry that already holds the Go runtime and process
// collectors and ddb2delta_<service>_build_info.
func New(service, version string, log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: fmt.Sprintf("ddb2delta_%s_build_info", service),
		Help: "Always 1; labels carry the build version.",
	}, []string{"version"})
	info.WithLabelValues(version).Set(1)
	reg.MustRegister(info)
	return &Server{service: service, registry: reg, log: log, checks: map[string]Check{}}
}

// Registry is where the service registers its own metrics.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// AddCheck registers a readiness check under name, replacing any check of that name.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// Drain marks the service not ready from now on: it is shutting down and handing work back.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
}

// Handler returns the mux serving /metrics, /healthz and /readyz (and /debug/pprof/ when
// profiling is enabled).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "service": s.service})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.profile {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	return mux
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	failures := s.Failures(r.Context())
	if len(failures) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "service": s.service})
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "service": s.service, "failures": failures})
}

// Failures runs every check concurrently and returns the failures by check name.
func (s *Server) Failures(ctx context.Context) map[string]string {
	s.mu.Lock()
	draining := s.draining
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	slices.Sort(names)
	checks := make([]Check, len(names))
	for i, n := range names {
		checks[i] = s.checks[n]
	}
	s.mu.Unlock()

	out := map[string]string{}
	if draining {
		out["shutdown"] = "draining"
	}
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, CheckTimeout)
			defer cancel()
			errs[i] = c(cctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			out[names[i]] = err.Error()
		}
	}
	return out
}

// Serve listens on addr until ctx is done, then shuts the listener down, giving in-flight scrapes
// up to a second. It returns once the listener is closed.
func (s *Server) Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for metrics and health on %s: %w", addr, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener is Serve on an existing listener (tests pass one on port 0).
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("serving metrics and health", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving metrics and health: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("stopping metrics and health server: %w", err)
	}
	<-errc
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
