package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fleet runs the services' replicas as separate processes of the real binaries.
type fleet struct {
	bins  map[string]string // service → binary
	confs map[string]string // service → config file
	env   []string          // environment every replica gets
	dir   string            // logs and state

	mu       sync.Mutex
	replicas map[string][]*replica // service → running replicas
	kills    map[string]int        // service → SIGKILLs sent (and faults injected)
	started  map[string]int        // service → replicas started, for ids
}

type replica struct {
	svc, id string
	addr    string
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

func newFleet(bins, confs map[string]string, env []string, dir string) *fleet {
	return &fleet{bins: bins, confs: confs, env: env, dir: dir, replicas: map[string][]*replica{},
		kills: map[string]int{}, started: map[string]int{}}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs a replica of svc; id names it (and its state, so a restart with the same id resumes
// it), extra adds environment (e.g. a fault point).
func (f *fleet) start(svc, id string, extra ...string) (*replica, error) {
	prefix := "DDB2DELTA_" + strings.ToUpper(svc) + "_"
	addr := freeAddr()
	env := append(append(os.Environ(), f.env...), prefix+"HTTP_LISTEN="+addr, prefix+"LOG_LEVEL=info")
	switch svc {
	case "producer", "enricher":
		env = append(env, prefix+"REPLICA_ID="+id)
	}
	if svc == "enricher" {
		env = append(env, prefix+"STATE_DIR="+filepath.Join(f.dir, "state", id))
	}
	env = append(env, extra...)
	logPath := filepath.Join(f.dir, "logs", id+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o750); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "===== %s starting %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), id, strings.Join(extra, " "))
	cmd := exec.Command(f.bins[svc], "-config", f.confs[svc])
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", id, err)
	}
	r := &replica{svc: svc, id: id, addr: addr, cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() { _ = cmd.Wait(); logf.Close(); close(r.done) }()
	f.mu.Lock()
	f.replicas[svc] = append(f.replicas[svc], r)
	f.started[svc]++
	f.mu.Unlock()
	return r, nil
}

// remove forgets r.
func (f *fleet) remove(r *replica) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs := f.replicas[r.svc]
	for i, x := range rs {
		if x == r {
			f.replicas[r.svc] = append(rs[:i:i], rs[i+1:]...)
			return
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (f *fleet) kill(r *replica) {
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	f.remove(r)
	f.mu.Lock()
	f.kills[r.svc]++
	f.mu.Unlock()
}

// stop sends SIGTERM and waits up to a minute, then kills.
func (f *fleet) stop(r *replica) {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(time.Minute):
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.done
	}
	f.remove(r)
}

// exited reports a replica that died on its own (a crash, not one of ours), or nil.
func (f *fleet) exited() *replica {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, rs := range f.replicas {
		for _, r := range rs {
			select {
			case <-r.done:
				return r
			default:
			}
		}
	}
	return nil
}

// running returns svc's running replicas.
func (f *fleet) running(svc string) []*replica {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*replica(nil), f.replicas[svc]...)
}

// stopAll stops every replica.
func (f *fleet) stopAll() {
	for _, svc := range []string{"producer", "enricher", "sink"} {
		for _, r := range f.running(svc) {
			f.stop(r)
		}
	}
}

// tail returns the last lines of a replica's log.
func tail(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 400 {
			lines[i] = l[:400] + " …"
		}
	}
	return strings.Join(lines, "\n")
}

// waitReady waits until every running replica answers /readyz with 200.
func (f *fleet) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, svc := range []string{"producer", "enricher", "sink"} {
		for _, r := range f.running(svc) {
			for {
				select {
				case <-r.done:
					return fmt.Errorf("%s exited while starting:\n%s", r.id, tail(r.logPath, 30))
				default:
				}
				resp, err := http.Get("http://" + r.addr + "/readyz")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						break
					}
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s not ready after %s:\n%s", r.id, timeout, tail(r.logPath, 30))
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// waitMetric waits until a metric of svc's first replica reaches want.
func (f *fleet) waitMetric(ctx context.Context, svc, metric string, want float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rs := f.running(svc)
		got := 0.0
		if len(rs) > 0 {
			got = metricSum(rs[0].addr, metric)
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s is %g after %s, want %g", svc, metric, got, timeout, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// metricSum adds up every series of a metric on a replica's /metrics (0 when it does not answer).
func metricSum(addr, name string) float64 { return metricWith(addr, name, "") }

// metricWith adds up the series of a metric whose labels contain label (`table="x"`; "" for all).
func metricWith(addr, name, label string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		if label != "" && !strings.Contains(line[:strings.LastIndexByte(line, ' ')], label) {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// watch fails the run when a service exits on its own while the workload runs.
func watch(ctx context.Context, f *fleet) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		if r := f.exited(); r != nil {
			return fmt.Errorf("%s exited on its own; its log:\n%s", r.id, tail(r.logPath, 40))
		}
	}
}
