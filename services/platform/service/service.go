// Package service runs a ddb2delta service process: flags, configuration, JSON logging, the
// metrics and health server, and shutdown on SIGTERM or SIGINT.
//
// Shutdown order: the signal cancels the run context; the service stops reading, finishes or hands
// back in-flight work, flushes, commits its positions and closes its clients before its run function
// returns; only then does the health server stop, so /readyz reports "draining" while that happens.
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/health"
)

// Version is the build version, set with -ldflags "-X …/service.Version=v1.2.3".
var Version = "dev"

// Base is the part of the configuration every service has: logging and the operational endpoints.
type Base struct {
	Log  LogConfig  `yaml:"log"`
	HTTP HTTPConfig `yaml:"http"`
}

// LogConfig configures the JSON logs written to standard output.
type LogConfig struct {
	// Level is debug, info, warn or error. Default: info.
	Level string `yaml:"level"`
}

// HTTPConfig configures the metrics and health endpoints.
type HTTPConfig struct {
	// Listen is the address of /metrics, /healthz and /readyz. Defaults differ per service
	// (producer :18101, enricher :18102, sink :18103) so all three run side by side on one host.
	Listen string `yaml:"listen"`
	// ShutdownTimeout bounds how long the service may take to hand back work after SIGTERM before
	// it exits anyway. Default: 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Pprof serves Go's profiler at /debug/pprof/ on Listen. Default: false (it exposes goroutine
	// stacks, and a profile costs CPU while it runs): turn it on to profile a service under load.
	Pprof bool `yaml:"pprof"`
}

// DefaultBase returns Base's defaults with the metrics and health server on listen.
func DefaultBase(listen string) Base {
	return Base{Log: LogConfig{Level: "info"}, HTTP: HTTPConfig{Listen: listen, ShutdownTimeout: 30 * time.Second}}
}

// Check adds every problem of Base to p.
func (b Base) Check(p *config.Problems) {
	if _, err := parseLevel(b.Log.Level); err != nil {
		p.Add("log.level", "%v", err)
	}
	if b.HTTP.Listen == "" || !strings.Contains(b.HTTP.Listen, ":") {
		p.Add("http.listen", "must be host:port or :port, got %q", b.HTTP.Listen)
	}
	if b.HTTP.ShutdownTimeout <= 0 {
		p.Add("http.shutdown_timeout", "must be positive, got %s", b.HTTP.ShutdownTimeout)
	}
}

// probeHealth GETs /healthz on the loopback side of listen.
func probeHealth(ctx context.Context, listen string) error {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("parsing http.listen: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort("127.0.0.1", port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %s", resp.Status)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown level %q (debug, info, warn, error)", s)
	}
	return l, nil
}

// Config is what Main needs of a service's configuration.
type Config interface {
	config.Validator
	// Basics returns the service's Base section.
	Basics() Base
}

// Runtime is what a service's run function is given.
type Runtime struct {
	Name   string
	Log    *slog.Logger
	Health *health.Server
}

// RunFunc runs a service until ctx is done, then shuts it down in order and returns. An error
// returned before ctx is done is fatal: the process logs it and exits 1.
type RunFunc[C Config] func(ctx context.Context, rt *Runtime, cfg C) error

// Exit codes of Main.
const (
	ExitOK          = 0
	ExitFatal       = 1
	ExitBadConfig   = 2
	ExitSlowShutdwn = 3
)

// Main runs service name with cfg (holding defaults) and returns the process exit code. Flags:
// -config FILE (or the environment variable <PREFIX>_CONFIG), -check-config to validate and exit.
// Environment variables under envPrefix override the file.
func Main[C Config](name, envPrefix string, cfg C, run RunFunc[C]) int {
	return main(context.Background(), name, envPrefix, os.Args[1:], os.Stdout, os.Stderr, cfg, run)
}

func main[C Config](ctx context.Context, name, envPrefix string, args []string, stdout, stderr io.Writer, cfg C, run RunFunc[C]) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv(envPrefix+"_CONFIG"), "YAML config `file` (env "+envPrefix+"_CONFIG); environment variables "+envPrefix+"_<KEY> override it")
	checkOnly := fs.Bool("check-config", false, "validate the configuration, print it (secrets redacted) and exit")
	probe := fs.Bool("healthcheck", false, "probe this service's /healthz on its http.listen port and exit 0 if it answers (for container health checks in images without a shell)")
	if err := fs.Parse(args); err != nil {
		return ExitBadConfig
	}
	if err := config.Load(*path, envPrefix, cfg); err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n", name)
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "  - %s\n", line)
		}
		return ExitBadConfig
	}
	base := cfg.Basics()
	level, _ := parseLevel(base.Log.Level) // validated by Load
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})).With("service", name)
	if *probe {
		if err := probeHealth(ctx, base.HTTP.Listen); err != nil {
			fmt.Fprintf(stderr, "%s: unhealthy: %v\n", name, err)
			return ExitFatal
		}
		return ExitOK
	}
	if *checkOnly {
		log.Info("configuration is valid", "config", cfg)
		return ExitOK
	}

	sigctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	rt := &Runtime{Name: name, Log: log, Health: health.New(name, Version, log)}
	if base.HTTP.Pprof {
		rt.Health.EnableProfiling()
	}
	log.Info("starting", "version", Version, "config", cfg)

	// The health server outlives the run function (it reports "draining" during shutdown), so it
	// gets its own context, cancelled once run has returned.
	srvctx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	var g errgroup.Group
	serveErr := make(chan error, 1)
	g.Go(func() error {
		err := rt.Health.Serve(srvctx, base.HTTP.Listen)
		serveErr <- err
		return err
	})
	runctx, cancelRun := context.WithCancel(sigctx)
	defer cancelRun()
	runErr := make(chan error, 1)
	go func() { runErr <- run(runctx, rt, cfg) }()

	var err error
	select {
	case err = <-runErr:
	case err = <-serveErr:
		cancelRun()
		<-runErr
	case <-sigctx.Done():
		log.Info("shutting down", "timeout", base.HTTP.ShutdownTimeout.String())
		rt.Health.Drain()
		select {
		case err = <-runErr:
		case <-time.After(base.HTTP.ShutdownTimeout):
			log.Error("shutdown timed out; exiting with work in flight", "timeout", base.HTTP.ShutdownTimeout.String())
			return ExitSlowShutdwn
		}
	}
	stopServer()
	if werr := g.Wait(); err == nil {
		err = werr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped with an error", "error", err)
		return ExitFatal
	}
	log.Info("stopped")
	return ExitOK
}
