package service

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/config"
	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

type testConfig struct {
	Log   LogConfig     `yaml:"log"`
	HTTP  HTTPConfig    `yaml:"http"`
	Token config.Secret `yaml:"token"`
}

func (c *testConfig) Basics() Base { return Base{Log: c.Log, HTTP: c.HTTP} }
func (c *testConfig) Validate() error {
	var p config.Problems
	c.Basics().Check(&p)
	return p.Err()
}

func newConfig(listen string) *testConfig {
	b := DefaultBase(listen)
	return &testConfig{Log: b.Log, HTTP: b.HTTP}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestMainBadConfigReportsAllProblems(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("log: {level: loud}\nhttp: {listen: nowhere}\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	code := main(context.Background(), "svc", "TESTSVC", []string{"-config", path}, &syncBuffer{}, &stderr, newConfig(":0"),
		func(context.Context, *Runtime, *testConfig) error {
			t.Error("run called with a bad config")
			return nil
		})
	if code != ExitBadConfig {
		t.Fatalf("exit = %d, want %d", code, ExitBadConfig)
	}
	for _, want := range []string{"bogus (line 3): unknown key", "log.level: unknown level \"loud\"", "http.listen: must be host:port"} {
		if code != ExitBadConfig || !strings.Contains(stderr.String(), want) {
			t.Errorf("exit %d, stderr does not mention %q:\n%s", code, want, stderr.String())
		}
	}
}

func TestMainRunsServesAndStopsInOrder(t *testing.T) {
	addr := freeAddr(t)
	t.Setenv("TESTSVC_TOKEN", "hunter2")
	var stdout syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	var sawDraining bool
	code := make(chan int, 1)
	go func() {
		code <- main(ctx, "svc", "TESTSVC", nil, &stdout, &syncBuffer{}, newConfig(addr),
			func(ctx context.Context, rt *Runtime, _ *testConfig) error {
				close(ready)
				<-ctx.Done()
				// Still serving while the service hands back work, and reporting not ready.
				resp, err := http.Get("http://" + addr + "/readyz")
				if err == nil {
					sawDraining = resp.StatusCode == http.StatusServiceUnavailable
					resp.Body.Close()
				}
				return nil
			})
	}()
	<-ready
	stacktest.Eventually(t, 10*time.Second, "the health server answers", func() error {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	if c := main(context.Background(), "svc", "TESTSVC", []string{"-healthcheck"}, &syncBuffer{}, &syncBuffer{}, newConfig(addr), nil); c != ExitOK {
		t.Errorf("-healthcheck against a running service = %d, want %d", c, ExitOK)
	}
	cancel()
	if c := <-code; c != ExitOK {
		t.Fatalf("exit = %d, logs:\n%s", c, stdout.String())
	}
	if !sawDraining {
		t.Error("/readyz did not report draining during shutdown")
	}
	logs := stdout.String()
	for _, want := range []string{`"msg":"starting"`, `"msg":"shutting down"`, `"msg":"stopped"`, `"service":"svc"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "hunter2") {
		t.Errorf("secret leaked into logs:\n%s", logs)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("health server still serving after Main returned")
	}
	if c := main(context.Background(), "svc", "TESTSVC", []string{"-healthcheck"}, &syncBuffer{}, &syncBuffer{}, newConfig(addr), nil); c != ExitFatal {
		t.Errorf("-healthcheck against a stopped service = %d, want %d", c, ExitFatal)
	}
}

func TestMainExitCodes(t *testing.T) {
	tests := []struct {
		name string
		run  func(ctx context.Context) error
		want int
	}{
		{"fatal error", func(context.Context) error { return errors.New("boom") }, ExitFatal},
		{"shutdown too slow", func(ctx context.Context) error { <-ctx.Done(); select {} }, ExitSlowShutdwn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := newConfig(freeAddr(t))
			cfg.HTTP.ShutdownTimeout = 50 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.want == ExitSlowShutdwn {
				cancel()
			}
			got := main(ctx, "svc", "TESTSVC", nil, &syncBuffer{}, &syncBuffer{}, cfg,
				func(ctx context.Context, _ *Runtime, _ *testConfig) error { return tt.run(ctx) })
			if got != tt.want {
				t.Fatalf("exit = %d, want %d", got, tt.want)
			}
		})
	}
}
