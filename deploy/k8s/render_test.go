package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// overlays are the directories users apply, the base included.
var overlays = []string{"base", "overlays/keda", "overlays/hpa", "overlays/dev"}

// services are ours: a Deployment ddb2delta-<name> whose container <name> runs the binary.
var services = []string{"producer", "enricher", "sink"}

// object is one rendered manifest, as decoded from YAML.
type object map[string]any

func (o object) kind() string { return str(o, "kind") }
func (o object) name() string { return str(o, "metadata", "name") }
func (o object) id() string   { return o.kind() + "/" + o.name() }

// get walks o along path (map keys, or list indexes as ints) and returns what is there, or nil.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				if o, isObj := v.(object); isObj {
					m = o
				} else {
					return nil
				}
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v any, path ...any) []any {
	l, _ := get(v, path...).([]any)
	return l
}

// render builds one kustomization directory (relative to deploy/k8s) with the kustomize API, as
// `kubectl kustomize` does, and returns its objects in output order and the YAML.
func render(t testing.TB, dir string) ([]object, []byte) {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	var objs []object
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		objs = append(objs, object(m))
	}
	return objs, out
}

func find(objs []object, kind, name string) object {
	for _, o := range objs {
		if o.kind() == kind && o.name() == name {
			return o
		}
	}
	return nil
}

func mustFind(t testing.TB, dir string, objs []object, kind, name string) object {
	t.Helper()
	o := find(objs, kind, name)
	if o == nil {
		t.Fatalf("%s renders no %s %s", dir, kind, name)
	}
	return o
}

// container returns the named container of a workload's pod template.
func container(o object, name string) map[string]any {
	for _, c := range list(o, "spec", "template", "spec", "containers") {
		if str(c, "name") == name {
			return c.(map[string]any)
		}
	}
	return nil
}

func TestOverlaysRender(t *testing.T) {
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs, out := render(t, dir)
			if len(objs) == 0 {
				t.Fatal("renders nothing")
			}
			// The YAML users apply decodes back to the same objects.
			var n int
			for doc := range strings.SplitSeq(string(out), "\n---\n") {
				var m map[string]any
				if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
					t.Fatalf("document %d: %v", n, err)
				}
				n++
			}
			if n != len(objs) {
				t.Errorf("%d YAML documents for %d objects", n, len(objs))
			}
			seen := map[string]bool{}
			for _, o := range objs {
				if o.kind() == "" || o.name() == "" || str(o, "apiVersion") == "" {
					t.Errorf("object without apiVersion, kind or name: %v", o)
				}
				if seen[o.id()] {
					t.Errorf("%s twice", o.id())
				}
				seen[o.id()] = true
				if o.kind() != "Namespace" && str(o, "metadata", "namespace") != "ddb2delta" {
					t.Errorf("%s is in namespace %q, want ddb2delta", o.id(), str(o, "metadata", "namespace"))
				}
			}
			for _, s := range services {
				name := "ddb2delta-" + s
				mustFind(t, dir, objs, "Deployment", name)
				mustFind(t, dir, objs, "ServiceAccount", name)
				mustFind(t, dir, objs, "PodDisruptionBudget", name)
				mustFind(t, dir, objs, "Service", name+"-metrics")
			}
		})
	}
}

// TestWorkloadsAreHardened checks every pod the overlays run, ours and the dev stack's, against
// what the namespace's "restricted" Pod Security level and the issue ask for.
func TestWorkloadsAreHardened(t *testing.T) {
	for _, dir := range overlays {
		objs, _ := render(t, dir)
		for _, o := range objs {
			if o.kind() != "Deployment" {
				continue
			}
			t.Run(dir+"/"+o.name(), func(t *testing.T) {
				pod := get(o, "spec", "template", "spec")
				if get(pod, "securityContext", "runAsNonRoot") != true {
					t.Error("pod securityContext.runAsNonRoot is not true")
				}
				if uid, ok := num(get(pod, "securityContext", "runAsUser")); !ok || uid == 0 {
					t.Error("pod securityContext.runAsUser is not a non-zero uid")
				}
				if str(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
					t.Error("pod seccompProfile is not RuntimeDefault")
				}
				if get(pod, "automountServiceAccountToken") != false {
					t.Error("automountServiceAccountToken is not false")
				}
				all := append(list(pod, "initContainers"), list(pod, "containers")...)
				for _, c := range all {
					cn := str(c, "name")
					if get(c, "securityContext", "allowPrivilegeEscalation") != false {
						t.Errorf("container %s: allowPrivilegeEscalation is not false", cn)
					}
					if drop := list(c, "securityContext", "capabilities", "drop"); !slices.Contains(drop, any("ALL")) {
						t.Errorf("container %s: capabilities.drop is %v, want ALL", cn, drop)
					}
					img := str(c, "image")
					if i := strings.LastIndex(img, ":"); i < 0 || strings.Contains(img[i:], "/") || img[i+1:] == "latest" {
						t.Errorf("container %s: image %q is not pinned to a tag", cn, img)
					}
					if get(c, "resources", "requests", "memory") == nil || get(c, "resources", "limits", "memory") == nil {
						t.Errorf("container %s: memory request and limit must be set", cn)
					}
				}
			})
		}
		for _, s := range services {
			d := mustFind(t, dir, objs, "Deployment", "ddb2delta-"+s)
			c := container(d, s)
			if c == nil {
				t.Fatalf("%s: Deployment ddb2delta-%s has no container %s", dir, s, s)
			}
			if get(c, "securityContext", "readOnlyRootFilesystem") != true {
				t.Errorf("%s: %s: readOnlyRootFilesystem is not true", dir, s)
			}
			for _, r := range []string{"cpu", "memory"} {
				if get(c, "resources", "requests", r) == nil || get(c, "resources", "limits", r) == nil {
					t.Errorf("%s: %s: %s request and limit must be set", dir, s, r)
				}
			}
			if len(list(d, "spec", "template", "spec", "topologySpreadConstraints")) == 0 {
				t.Errorf("%s: %s: no topologySpreadConstraints", dir, s)
			}
			pdb := mustFind(t, dir, objs, "PodDisruptionBudget", "ddb2delta-"+s)
			if fmt.Sprint(get(pdb, "spec", "maxUnavailable")) != "1" {
				t.Errorf("%s: PodDisruptionBudget ddb2delta-%s: maxUnavailable %v, want 1", dir, s, get(pdb, "spec", "maxUnavailable"))
			}
			if str(pdb, "spec", "unhealthyPodEvictionPolicy") != "AlwaysAllow" {
				t.Errorf("%s: PodDisruptionBudget ddb2delta-%s: unready pods (an outage) would block node drains", dir, s)
			}
			if !sameLabels(get(pdb, "spec", "selector", "matchLabels"), get(d, "spec", "selector", "matchLabels")) {
				t.Errorf("%s: PodDisruptionBudget ddb2delta-%s does not select the Deployment's pods", dir, s)
			}
			svc := mustFind(t, dir, objs, "Service", "ddb2delta-"+s+"-metrics")
			if !sameLabels(get(svc, "spec", "selector"), get(d, "spec", "selector", "matchLabels")) {
				t.Errorf("%s: Service ddb2delta-%s-metrics does not select the Deployment's pods", dir, s)
			}
		}
	}
}

// num reads a YAML number, whichever Go type the decoder chose.
func num(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int64:
		return n, true
	case float64:
		return int64(n), n == float64(int64(n))
	}
	return 0, false
}

func sameLabels(a, b any) bool {
	am, _ := a.(map[string]any)
	bm, _ := b.(map[string]any)
	if len(am) == 0 || len(am) != len(bm) {
		return false
	}
	for k, v := range am {
		if bm[k] != v {
			return false
		}
	}
	return true
}

// TestAutoscaledReplicasAreNotApplied: where an autoscaler owns a Deployment's replica count, the
// rendered Deployment must not carry one, or every `kubectl apply` would reset it.
func TestAutoscaledReplicasAreNotApplied(t *testing.T) {
	for _, dir := range []string{"overlays/keda", "overlays/hpa"} {
		objs, _ := render(t, dir)
		for _, s := range services {
			d := mustFind(t, dir, objs, "Deployment", "ddb2delta-"+s)
			if r := get(d, "spec", "replicas"); r != nil {
				t.Errorf("%s: Deployment ddb2delta-%s sets replicas: %v", dir, s, r)
			}
		}
	}
}

func TestMain(m *testing.M) {
	// Paths in the tests are relative to deploy/k8s, where `go test` runs them.
	if _, err := os.Stat(filepath.Join("base", "kustomization.yaml")); err != nil {
		fmt.Fprintln(os.Stderr, "run the tests from deploy/k8s:", err)
		os.Exit(1)
	}
	code := m.Run()
	if binsDir != "" {
		os.RemoveAll(binsDir) // the service binaries the package's tests shared
	}
	os.Exit(code)
}
