//go:build k8s

package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/yannh/kubeconform/pkg/resource"
	"github.com/yannh/kubeconform/pkg/validator"
	"sigs.k8s.io/yaml"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// kube locates what scripts/stack kube-up installed and started.
type kube struct {
	bin, kubeconfig, schemas, version string
}

func loadKube(t *testing.T) kube {
	t.Helper()
	s, err := stacktest.Load()
	if err != nil {
		t.Fatal(err)
	}
	v := s.Env["STACK_KUBERNETES_VERSION"]
	minor := strings.Split(v, ".")[1]
	k := kube{
		bin:        filepath.Join(s.Env["STACK_CACHE_DIR"], "kubernetes-"+v, "bin", "kubectl"),
		kubeconfig: filepath.Join(s.RunDir, "k8s", "kubeconfig"),
		schemas:    filepath.Join(s.Env["STACK_CACHE_DIR"], "kubernetes-validate-"+s.Env["STACK_KUBERNETES_VALIDATE_VERSION"]),
		version:    "1." + minor + ".0",
	}
	for _, f := range []string{k.bin, k.kubeconfig, filepath.Join(k.schemas, "v"+k.version+"-local-strict")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v: start the API server first: scripts/stack kube-up (make test-k8s does)", err)
		}
	}
	return k
}

// schemaDir copies the strict schemas with their references made absolute: the package's files
// refer to "/api/_definitions.json", which kubeconform would fetch over HTTP.
func (k kube) schemaDir(t *testing.T) string {
	t.Helper()
	folder := "v" + k.version + "-local-strict"
	src := filepath.Join(k.schemas, folder)
	dst := filepath.Join(t.TempDir(), folder)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	defs := "file://" + filepath.Join(dst, "_definitions.json")
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		raw = bytes.ReplaceAll(raw, []byte(`"/api/_definitions.json#`), []byte(`"`+defs+`#`))
		if e.Name() == "_definitions.json" {
			// its "$id" would make the "#/$defs/…" references inside it resolve over HTTP
			var defs map[string]any
			if err := json.Unmarshal(raw, &defs); err != nil {
				t.Fatalf("_definitions.json: %v", err)
			}
			if _, ok := defs["$id"]; !ok {
				t.Fatal(`_definitions.json has no "$id": the package's layout changed`)
			}
			delete(defs, "$id")
			if raw, err = json.Marshal(defs); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Dir(dst)
}

func (k kube) validator(t *testing.T) validator.Validator {
	t.Helper()
	dir := k.schemaDir(t)
	v, err := validator.New([]string{dir + "/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"},
		validator.Opts{KubernetesVersion: k.version, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func isKeda(o object) bool { return strings.HasPrefix(str(o, "apiVersion"), "keda.sh/") }

// TestBuiltInKindsValidate validates every built-in object of every overlay strictly (unknown
// fields are errors) with kubeconform against the JSON schemas of Kubernetes' own OpenAPI.
// KEDA's kinds are checked by TestKedaObjects and by the API server with KEDA's CRDs.
func TestBuiltInKindsValidate(t *testing.T) {
	k := loadKube(t)
	v := k.validator(t)
	for _, dir := range overlays {
		objs, _ := render(t, dir)
		for _, o := range objs {
			if isKeda(o) {
				continue
			}
			raw, err := yaml.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			res := v.ValidateResource(resource.Resource{Path: dir, Bytes: raw})
			if res.Status != validator.Valid {
				t.Errorf("%s: %s: %s %v %v", dir, o.id(), statusName(res.Status), res.Err, res.ValidationErrors)
			}
		}
	}
	// The same validator rejects what it should: a misspelt field, a wrong type.
	objs, _ := render(t, "base")
	d := mustFind(t, "base", objs, "Deployment", "ddb2delta-sink")
	for name, change := range map[string]func(object){
		"unknown field": func(o object) { get(o, "spec").(map[string]any)["replica"] = 2 },
		"wrong type":    func(o object) { get(o, "spec").(map[string]any)["replicas"] = "two" },
	} {
		bad := object{}
		raw, _ := yaml.Marshal(d)
		if err := yaml.Unmarshal(raw, &bad); err != nil {
			t.Fatal(err)
		}
		change(bad)
		raw, _ = yaml.Marshal(bad)
		if res := v.ValidateResource(resource.Resource{Path: name, Bytes: raw}); res.Status != validator.Invalid {
			t.Errorf("%s: kubeconform says %s, want invalid", name, statusName(res.Status))
		}
	}
}

func statusName(s validator.Status) string {
	return map[validator.Status]string{validator.Error: "error", validator.Skipped: "skipped", validator.Valid: "valid",
		validator.Invalid: "invalid", validator.Empty: "empty"}[s]
}

// kubectl runs kubectl against the test API server with stdin and returns stdout and stderr.
func (k kube) kubectl(t *testing.T, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(k.bin, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// TestOverlaysApplyToAPIServer applies every overlay, as rendered by the kubectl of the
// Kubernetes release under test, to a real kube-apiserver with KEDA's CRDs installed, as a server
// dry run: the API server decodes, defaults, validates (strict field validation) and admits each
// object (Pod Security "restricted" in the namespace included) without persisting it.
func TestOverlaysApplyToAPIServer(t *testing.T) {
	k := loadKube(t)

	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kedacore/keda/v2").Output()
	if err != nil {
		t.Fatalf("locating the KEDA module: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "bases")
	var crdYAML []byte
	for _, f := range []string{"keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"} {
		raw, err := os.ReadFile(filepath.Join(crds, f))
		if err != nil {
			t.Fatal(err)
		}
		crdYAML = append(append(crdYAML, raw...), []byte("\n---\n")...)
	}
	if o, e, err := k.kubectl(t, crdYAML, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("installing KEDA's CRDs: %v\n%s%s", err, o, e)
	}
	if o, e, err := k.kubectl(t, nil, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/scaledobjects.keda.sh", "crd/triggerauthentications.keda.sh"); err != nil {
		t.Fatalf("KEDA's CRDs: %v\n%s%s", err, o, e)
	}

	// The namespace for real (a dry run of the objects in it needs it to exist), with its labels.
	base, _ := render(t, "base")
	nsYAML, _ := yaml.Marshal(mustFind(t, "base", base, "Namespace", "ddb2delta"))
	if o, e, err := k.kubectl(t, nsYAML, "apply", "-f", "-"); err != nil {
		t.Fatalf("creating the namespace: %v\n%s%s", err, o, e)
	}

	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			// kubectl's own kustomize (what users run) renders what the kustomize API renders.
			rendered, e, err := k.kubectl(t, nil, "kustomize", dir)
			if err != nil {
				t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, e)
			}
			objs, _ := render(t, dir)
			if diff := sameObjects(objs, rendered); diff != "" {
				t.Errorf("kubectl kustomize and the kustomize API differ: %s", diff)
			}
			o, e, err := k.kubectl(t, []byte(rendered), "apply", "--dry-run=server", "-f", "-")
			if err != nil {
				t.Fatalf("kubectl apply --dry-run=server: %v\n%s%s", err, o, e)
			}
			if strings.Contains(e, "Warning") {
				t.Errorf("the API server warns:\n%s", e)
			}
			for _, obj := range objs {
				line := strings.ToLower(obj.kind()) + "/" + obj.name()
				if !slices.ContainsFunc(strings.Split(o, "\n"), func(l string) bool {
					return strings.Contains(l, "/"+obj.name()+" ") && strings.HasSuffix(l, "(server dry run)")
				}) {
					t.Errorf("%s not accepted (output:\n%s)", line, o)
				}
			}
		})
	}

	// The API server rejects what it should: a misspelt ScaledObject field (strict validation
	// against KEDA's CRD schema) and a pod that breaks the namespace's Pod Security level.
	keda, _ := render(t, "overlays/keda")
	so := mustFind(t, "overlays/keda", keda, "ScaledObject", "ddb2delta-sink")
	get(so, "spec").(map[string]any)["maxReplicas"] = 3
	raw, _ := yaml.Marshal(so)
	if o, e, err := k.kubectl(t, raw, "apply", "--dry-run=server", "-f", "-"); err == nil || !strings.Contains(e, "maxReplicas") {
		t.Errorf("a ScaledObject with an unknown field was accepted: %v\n%s%s", err, o, e)
	}
	d := mustFind(t, "base", base, "Deployment", "ddb2delta-sink")
	get(d, "spec", "template", "spec", "securityContext").(map[string]any)["runAsNonRoot"] = false
	raw, _ = yaml.Marshal(d)
	if o, e, _ := k.kubectl(t, raw, "apply", "--dry-run=server", "-f", "-"); !strings.Contains(e, "restricted") {
		t.Errorf("a Deployment whose pods may run as root drew no Pod Security warning:\n%s%s", o, e)
	}
}

// sameObjects compares rendered objects with another rendering's YAML, ignoring order.
func sameObjects(objs []object, other string) string {
	want := map[string]object{}
	for _, o := range objs {
		want[o.id()] = o
	}
	got := map[string]object{}
	for doc := range strings.SplitSeq(other, "\n---\n") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			return err.Error()
		}
		got[o.id()] = o
	}
	var diffs []string
	for id, o := range want {
		g, ok := got[id]
		if !ok {
			diffs = append(diffs, id+" missing")
			continue
		}
		a, _ := yaml.Marshal(o)
		b, _ := yaml.Marshal(g)
		if !reflect.DeepEqual(a, b) {
			diffs = append(diffs, fmt.Sprintf("%s:\n%s\nvs\n%s", id, a, b))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, id+" extra")
		}
	}
	return strings.Join(diffs, "; ")
}
