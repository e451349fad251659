package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
)

// strictDecode decodes a rendered object into out, failing on any field out's type does not have:
// the check the API server's strict field validation makes, with KEDA's own Go types.
func strictDecode(o object, out any) error {
	raw, err := json.Marshal(o)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(out)
}

// kedaParam is one trigger parameter as KEDA declares it: a `keda:"…"` struct tag of the scaler's
// metadata type, read from the source of the KEDA module this module pins.
type kedaParam struct {
	name       string
	orders     []string // triggerMetadata, resolvedEnv, authParams
	optional   bool
	hasDefault bool
	deprecated bool
	enum       []string
	kind       string // the Go type of the field: string, bool, int64, []string, …
}

// scalerSources maps the trigger types the overlays use to the file declaring their parameters.
var scalerSources = map[string]string{
	"kafka":                "pkg/scalers/kafka_scaler.go",
	"aws-dynamodb-streams": "pkg/scalers/aws_dynamodb_streams_scaler.go",
}

var (
	paramsOnce sync.Once
	paramsBy   map[string][]kedaParam
	paramsErr  error
)

// kedaParams returns the declared parameters of a trigger type.
func kedaParams(t *testing.T, trigger string) []kedaParam {
	t.Helper()
	paramsOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kedacore/keda/v2").Output()
		if err != nil {
			paramsErr = fmt.Errorf("locating the KEDA module: %w", err)
			return
		}
		dir := strings.TrimSpace(string(out))
		paramsBy = map[string][]kedaParam{}
		for typ, file := range scalerSources {
			ps, err := parseParams(filepath.Join(dir, file))
			if err != nil {
				paramsErr = err
				return
			}
			paramsBy[typ] = ps
		}
	})
	if paramsErr != nil {
		t.Fatal(paramsErr)
	}
	ps, ok := paramsBy[trigger]
	if !ok {
		t.Fatalf("trigger type %q: add the file declaring its parameters to scalerSources", trigger)
	}
	return ps
}

func parseParams(path string) ([]kedaParam, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, err
	}
	var out []kedaParam
	ast.Inspect(f, func(n ast.Node) bool {
		st, ok := n.(*ast.StructType)
		if !ok {
			return true
		}
		for _, fld := range st.Fields.List {
			if fld.Tag == nil {
				continue
			}
			tag, err := strconv.Unquote(fld.Tag.Value)
			if err != nil {
				continue
			}
			k, ok := reflect.StructTag(tag).Lookup("keda")
			if !ok {
				continue
			}
			p := kedaParam{kind: types(fld.Type)}
			for item := range strings.SplitSeq(k, ",") {
				key, val, _ := strings.Cut(strings.TrimSpace(item), "=")
				switch key {
				case "name":
					p.name = val
				case "order":
					p.orders = strings.Split(val, ";")
				case "optional":
					p.optional = true
				case "default":
					p.hasDefault = true
				case "deprecated":
					p.deprecated = true
				case "enum":
					p.enum = strings.Split(val, ";")
				}
			}
			if p.name != "" {
				out = append(out, p)
			}
		}
		return true
	})
	if len(out) == 0 {
		return nil, fmt.Errorf("%s declares no keda parameters: has KEDA changed how it declares them?", path)
	}
	return out, nil
}

func types(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.ArrayType:
		return "[]" + types(x.Elt)
	case *ast.MapType:
		return "map"
	}
	return "other"
}

// checkTrigger returns every problem of one trigger's metadata against KEDA's declaration: keys it
// does not know (a misspelt key is otherwise ignored: metadata is a string map), deprecated keys,
// values outside an enum or not of the field's type, and required keys that are missing.
func checkTrigger(params []kedaParam, tr kedav1alpha1.ScaleTriggers) []string {
	var problems []string
	known := map[string]kedaParam{}
	for _, p := range params {
		if slices.Contains(p.orders, "triggerMetadata") {
			known[p.name] = p
		}
		if slices.Contains(p.orders, "resolvedEnv") {
			known[p.name+"FromEnv"] = p
		}
	}
	for key, val := range tr.Metadata {
		p, ok := known[key]
		if !ok {
			problems = append(problems, fmt.Sprintf("metadata %s: not a parameter of the %s trigger", key, tr.Type))
			continue
		}
		if p.deprecated {
			problems = append(problems, fmt.Sprintf("metadata %s: deprecated", key))
		}
		if strings.HasSuffix(key, "FromEnv") && key != p.name {
			continue // names a container variable
		}
		if len(p.enum) > 0 && !slices.Contains(p.enum, val) {
			problems = append(problems, fmt.Sprintf("metadata %s: %q is not one of %v", key, val, p.enum))
		}
		var err error
		switch p.kind {
		case "bool":
			_, err = strconv.ParseBool(val)
		case "int", "int32", "int64":
			_, err = strconv.ParseInt(val, 10, 64)
		case "float64":
			_, err = strconv.ParseFloat(val, 64)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("metadata %s: %q is not a %s", key, val, p.kind))
		}
	}
	for _, p := range params {
		if p.optional || p.hasDefault || p.deprecated || !slices.Contains(p.orders, "triggerMetadata") {
			continue
		}
		if slices.Contains(p.orders, "authParams") && tr.AuthenticationRef != nil {
			continue // may come from the TriggerAuthentication
		}
		if _, ok := tr.Metadata[p.name]; ok {
			continue
		}
		if _, ok := tr.Metadata[p.name+"FromEnv"]; ok && slices.Contains(p.orders, "resolvedEnv") {
			continue
		}
		problems = append(problems, fmt.Sprintf("metadata %s: required by the %s trigger", p.name, tr.Type))
	}
	slices.Sort(problems)
	return problems
}

// TestKedaObjects decodes the keda overlay's KEDA objects with KEDA's types, strictly, runs the
// validators KEDA's admission webhook runs that need no cluster, and checks trigger metadata.
func TestKedaObjects(t *testing.T) {
	objs, _ := render(t, "overlays/keda")
	auths := map[string]bool{}
	var scaled []kedav1alpha1.ScaledObject
	for _, o := range objs {
		switch o.kind() {
		case "TriggerAuthentication":
			var ta kedav1alpha1.TriggerAuthentication
			if err := strictDecode(o, &ta); err != nil {
				t.Errorf("TriggerAuthentication %s: %v", o.name(), err)
			}
			auths[ta.Name] = true
		case "ScaledObject":
			var so kedav1alpha1.ScaledObject
			if err := strictDecode(o, &so); err != nil {
				t.Errorf("ScaledObject %s: %v", o.name(), err)
				continue
			}
			scaled = append(scaled, so)
		}
	}
	if len(scaled) != len(services) {
		t.Fatalf("%d ScaledObjects, want one per service", len(scaled))
	}
	for _, so := range scaled {
		t.Run(so.Name, func(t *testing.T) {
			if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
				t.Errorf("ValidateTriggers: %v", err)
			}
			if err := kedav1alpha1.CheckReplicaCountBoundsAreValid(&so); err != nil {
				t.Errorf("replica counts: %v", err)
			}
			if so.Spec.Fallback == nil {
				t.Error("no fallback: a scaler that cannot read its metric would leave the replica count to chance")
			} else if err := kedav1alpha1.CheckFallbackValid(&so); err != nil {
				t.Errorf("fallback: %v", err)
			}
			if so.Spec.Advanced == nil || so.Spec.Advanced.HorizontalPodAutoscalerConfig == nil ||
				so.Spec.Advanced.HorizontalPodAutoscalerConfig.Behavior == nil ||
				so.Spec.Advanced.HorizontalPodAutoscalerConfig.Behavior.ScaleDown == nil {
				t.Error("no HPA scale-down behavior: every replica change rebalances a group or moves leases")
			}
			// What KEDA's webhook warns about: with the HPA driving (minReplicaCount above 0),
			// pollingInterval only matters for cached metrics, and cooldownPeriod never.
			if so.Spec.PollingInterval != nil && !so.IsPollingIntervalRelevant() {
				t.Error("pollingInterval has no effect: the HPA queries the triggers itself (set useCachedMetrics)")
			}
			if so.Spec.CooldownPeriod != nil && so.Spec.MinReplicaCount != nil && *so.Spec.MinReplicaCount > 0 {
				t.Error("cooldownPeriod has no effect: it only applies to scaling to zero")
			}
			for _, tr := range so.Spec.Triggers {
				if !tr.UseCachedMetrics {
					t.Errorf("trigger %s: without useCachedMetrics every HPA query (15 s) reaches Kafka or DynamoDB Streams", tr.Type)
				}
			}
			if find(objs, "Deployment", so.Spec.ScaleTargetRef.Name) == nil {
				t.Errorf("scaleTargetRef %s is not a Deployment of the overlay", so.Spec.ScaleTargetRef.Name)
			}
			for _, tr := range so.Spec.Triggers {
				for _, p := range checkTrigger(kedaParams(t, tr.Type), tr) {
					t.Errorf("trigger %s: %s", tr.Type, p)
				}
				if tr.AuthenticationRef != nil && !auths[tr.AuthenticationRef.Name] {
					t.Errorf("trigger %s: authenticationRef %s is not in the overlay", tr.Type, tr.AuthenticationRef.Name)
				}
			}
		})
	}
}

// TestTriggerCheckCatchesMistakes feeds checkTrigger the mistakes it exists for.
func TestTriggerCheckCatchesMistakes(t *testing.T) {
	good := map[string]string{"bootstrapServers": "kafka:9092", "consumerGroup": "g", "lagThreshold": "100", "offsetResetPolicy": "earliest"}
	if p := checkTrigger(kedaParams(t, "kafka"), kedav1alpha1.ScaleTriggers{Type: "kafka", Metadata: good}); len(p) != 0 {
		t.Fatalf("a correct trigger has problems: %v", p)
	}
	for name, tc := range map[string]struct {
		change func(map[string]string)
		want   string
	}{
		"misspelt key":  {func(m map[string]string) { m["lagTreshold"] = "5" }, "metadata lagTreshold: not a parameter"},
		"enum":          {func(m map[string]string) { m["offsetResetPolicy"] = "oldest" }, `"oldest" is not one of`},
		"not a number":  {func(m map[string]string) { m["lagThreshold"] = "10k" }, `"10k" is not a int64`},
		"not a boolean": {func(m map[string]string) { m["allowIdleConsumers"] = "no" }, `"no" is not a bool`},
		"required":      {func(m map[string]string) { delete(m, "consumerGroup") }, "metadata consumerGroup: required"},
	} {
		t.Run(name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range good {
				m[k] = v
			}
			tc.change(m)
			p := checkTrigger(kedaParams(t, "kafka"), kedav1alpha1.ScaleTriggers{Type: "kafka", Metadata: m})
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("problems %v do not include %q", p, tc.want)
			}
		})
	}
}

// TestScalingAgreesWithServices: the autoscalers scale what the services' configuration says —
// the consumer groups and brokers the services use, the producer's tables, and never more
// enricher or sink replicas than the producer's topics have partitions.
func TestScalingAgreesWithServices(t *testing.T) {
	for _, dir := range []string{"overlays/keda", "overlays/hpa"} {
		t.Run(dir, func(t *testing.T) {
			objs, _ := render(t, dir)
			cfgs := configs(t, dir, objs)
			partitions := cfgs["producer"].Topics.Partitions
			for _, svc := range services {
				var max int64
				if o := find(objs, "ScaledObject", "ddb2delta-"+svc); o != nil {
					var so kedav1alpha1.ScaledObject
					if err := strictDecode(o, &so); err != nil {
						t.Fatal(err)
					}
					if so.Spec.MaxReplicaCount != nil {
						max = int64(*so.Spec.MaxReplicaCount)
					}
					checkTriggersAgree(t, svc, so, cfgs)
				} else if o := find(objs, "HorizontalPodAutoscaler", "ddb2delta-"+svc); o != nil {
					max, _ = num(get(o, "spec", "maxReplicas"))
				} else {
					t.Fatalf("no autoscaler for %s", svc)
				}
				if svc != "producer" && max > int64(partitions) {
					t.Errorf("%s: up to %d replicas, but its inputs have %d partitions (topics.partitions): the rest would idle", svc, max, partitions)
				}
				if max == 0 {
					t.Errorf("%s: no maximum replica count", svc)
				}
			}
		})
	}
}

func checkTriggersAgree(t *testing.T, svc string, so kedav1alpha1.ScaledObject, cfgs map[string]effective) {
	t.Helper()
	cfg := cfgs[svc]
	switch svc {
	case "enricher", "sink":
		inputs := map[string]bool{}
		for _, p := range cfg.Pipelines {
			for _, in := range p.Inputs {
				inputs[in] = true
			}
		}
		for _, tb := range cfg.Tables {
			for _, in := range tb.Topics {
				inputs[in] = true
			}
		}
		topics := map[string]bool{}
		for _, tr := range so.Spec.Triggers {
			topics[tr.Metadata["topic"]] = true
		}
		// A trigger without a topic sees only topics the group has committed on: one per input.
		if !maps.Equal(inputs, topics) {
			t.Errorf("%s: kafka triggers for topics %v, the service reads %v", svc, slices.Sorted(maps.Keys(topics)), slices.Sorted(maps.Keys(inputs)))
		}
		for _, tr := range so.Spec.Triggers {
			if tr.Type != "kafka" {
				t.Errorf("%s: trigger %s, want kafka (consumer lag)", svc, tr.Type)
				continue
			}
			if got, want := tr.Metadata["bootstrapServers"], strings.Join(cfg.Kafka.Brokers, ","); got != want {
				t.Errorf("%s: bootstrapServers %q, the service uses %q", svc, got, want)
			}
			if got := tr.Metadata["consumerGroup"]; got != cfg.ConsumerGroup {
				t.Errorf("%s: consumerGroup %q, the service's consumer_group is %q", svc, got, cfg.ConsumerGroup)
			}
			if tr.Metadata["offsetResetPolicy"] != "earliest" {
				t.Errorf("%s: offsetResetPolicy must be earliest: a new group reads its inputs from the start", svc)
			}
		}
	case "producer":
		tables := map[string]bool{}
		for _, tr := range so.Spec.Triggers {
			if tr.Type != "aws-dynamodb-streams" {
				t.Errorf("producer: trigger %s, want aws-dynamodb-streams (shard count)", tr.Type)
				continue
			}
			tables[tr.Metadata["tableName"]] = true
			if tr.Metadata["awsRegion"] != cfg.DynamoDB.Region {
				t.Errorf("producer: trigger awsRegion %q, the producer's dynamodb.region is %q", tr.Metadata["awsRegion"], cfg.DynamoDB.Region)
			}
		}
		for _, tb := range cfg.Tables {
			if !tables[tb.Name] {
				t.Errorf("producer: table %s has no aws-dynamodb-streams trigger", tb.Name)
			}
		}
		if len(tables) != len(cfg.Tables) {
			t.Errorf("producer: triggers for tables %v, the producer reads %d", tables, len(cfg.Tables))
		}
	}
}
