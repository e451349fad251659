// Package proc builds and runs ddb2delta's real service binaries as separate processes, for
// system tests: the same executables users run, started with real config files and environment.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// Build compiles the named services (producer, enricher, sink) from the workspace at root into a
// temporary folder and returns their paths by name.
func Build(t testing.TB, root string, services ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	for _, s := range services {
		args = append(args, "./services/"+s+"/cmd/"+s)
		out[s] = filepath.Join(dir, s)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %v: %v\n%s", services, err, b)
	}
	return out
}

// Process is a running service.
type Process struct {
	Name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs bin with args and extra environment (on top of the test's own). The process is
// killed when the test ends, and its output is printed if the test failed.
func Start(t testing.TB, name, bin string, args, env []string) *Process {
	t.Helper()
	p := &Process{Name: name, out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.Output())
		}
	})
	return p
}

// Output is everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends sig and waits up to timeout for the process to exit, returning its exit code.
func (p *Process) Stop(sig syscall.Signal, timeout time.Duration) (int, error) {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("signalling %s: %w", p.Name, err)
	}
	return p.Wait(timeout)
}

// Wait waits up to timeout for the process to exit and returns its exit code.
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running %s after the signal", p.Name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, p.err
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Get fetches url and returns the status code and body.
func Get(url string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// AWSEnv gives a service the stack's local AWS credentials through the standard variables, as a
// user's shell or a pod's environment would.
func AWSEnv(s *stacktest.Stack) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.Env["STACK_AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY=" + s.Env["STACK_AWS_SECRET_ACCESS_KEY"],
		"AWS_REGION=" + s.Env["STACK_AWS_REGION"], "AWS_EC2_METADATA_DISABLED=true",
	}
}

// WaitReady waits up to a minute for p to answer 200 on base+"/readyz", failing the test if it
// exits first.
func WaitReady(t testing.TB, p *Process, base string) {
	t.Helper()
	stacktest.Eventually(t, 60*time.Second, p.Name+" /readyz", func() error {
		if p.Exited() {
			t.Fatalf("%s exited before becoming ready", p.Name)
		}
		code, body, err := Get(base + "/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/readyz = %d %s", code, body)
		}
		return nil
	})
}
