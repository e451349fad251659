package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func startServer(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	s := New("sink", "v1.2.3", slog.New(slog.DiscardHandler))
	base := startServer(t, s)

	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("healthz = %d", code)
	}
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("readyz with no checks = %d", code)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, `ddb2delta_sink_build_info{version="v1.2.3"} 1`) || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics = %d:\n%s", code, body)
	}

	var broken atomic.Bool
	broken.Store(true)
	s.AddCheck("kafka", func(context.Context) error {
		if broken.Load() {
			return errors.New("no broker")
		}
		return nil
	})
	s.AddCheck("slow", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	code, body = get(t, base+"/readyz")
	var got struct{ Failures map[string]string }
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if code != 503 || got.Failures["kafka"] != "no broker" || !strings.Contains(got.Failures["slow"], "deadline") {
		t.Fatalf("readyz = %d %s", code, body)
	}

	broken.Store(false)
	s.AddCheck("slow", func(context.Context) error { return nil })
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("readyz after recovery = %d %s", code, body)
	}
	s.Drain()
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("readyz while draining = %d %s", code, body)
	}
}

// TestProfiling: /debug/pprof/ is served only when enabled.
func TestProfiling(t *testing.T) {
	off := startServer(t, New("sink", "v1", slog.New(slog.DiscardHandler)))
	if code, _ := get(t, off+"/debug/pprof/"); code != 404 {
		t.Fatalf("pprof without EnableProfiling = %d, want 404", code)
	}
	s := New("sink", "v1", slog.New(slog.DiscardHandler))
	s.EnableProfiling()
	on := startServer(t, s)
	if code, body := get(t, on+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof enabled = %d %s", code, body)
	}
}

func TestProgress(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewProgress(10 * time.Second)
	p.now = func() time.Time { return now }
	p.last = now
	ctx := context.Background()

	steps := []struct {
		name    string
		advance time.Duration
		act     func()
		ready   bool
	}{
		{"idle for long is ready", time.Hour, nil, true},
		{"work appears", 0, func() { p.SetPending(5) }, true},
		{"pending within limit", 9 * time.Second, nil, true},
		{"pending past limit stalls", 2 * time.Second, nil, false},
		{"progress recovers", 0, p.Advanced, true},
		{"stalls again", 11 * time.Second, nil, false},
		{"drained is ready", 0, func() { p.SetPending(0) }, true},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		if st.act != nil {
			st.act()
		}
		if err := p.Check(ctx); (err == nil) != st.ready {
			t.Fatalf("%s: Check = %v, want ready=%v", st.name, err, st.ready)
		}
	}
}
