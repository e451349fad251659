//go:build integration

package stack

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ddb2delta/ddb2delta/services/platform/stacktest"
)

// TestRegistry registers an Avro schema through the Confluent-compatible API, fetches it back by
// id, sets BACKWARD_TRANSITIVE on the subject and checks that a compatible evolution is accepted
// while an incompatible one is refused.
func TestRegistry(t *testing.T) {
	s := stacktest.Require(t, stacktest.Registry)
	ctx := stacktest.Context(t, 60*time.Second)
	cl, err := sr.NewClient(sr.URLs(s.RegistryURL))
	if err != nil {
		t.Fatal(err)
	}
	subject := fmt.Sprintf("stacktest.%d-value", time.Now().UnixNano())
	t.Cleanup(func() { _, _ = cl.DeleteSubject(ctx, subject, sr.SoftDelete) })

	v1 := `{"type":"record","name":"Item","namespace":"stacktest","fields":[{"name":"pk","type":"string"}]}`
	created, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: v1, Type: sr.TypeAvro})
	if err != nil {
		t.Fatalf("registering %s: %v", subject, err)
	}
	again, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: v1, Type: sr.TypeAvro})
	if err != nil || again.ID != created.ID {
		t.Fatalf("re-registering the same schema: id %d, %v; want id %d", again.ID, err, created.ID)
	}
	fetched, err := cl.SchemaByID(ctx, created.ID)
	if err != nil {
		t.Fatalf("fetching schema %d: %v", created.ID, err)
	}
	if !sameJSON(t, fetched.Schema, v1) {
		t.Fatalf("schema %d came back as %s, want %s", created.ID, fetched.Schema, v1)
	}
	subjects, err := cl.Subjects(ctx)
	if err != nil || !slices.Contains(subjects, subject) {
		t.Fatalf("subjects = %v, %v; want %s listed", subjects, err, subject)
	}

	set := cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatBackwardTransitive}, subject)
	if len(set) != 1 || set[0].Err != nil {
		t.Fatalf("setting compatibility: %+v", set)
	}
	// A new optional field with a default keeps old records readable: accepted.
	v2 := `{"type":"record","name":"Item","namespace":"stacktest","fields":[{"name":"pk","type":"string"},{"name":"note","type":["null","string"],"default":null}]}`
	if _, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: v2, Type: sr.TypeAvro}); err != nil {
		t.Fatalf("registering a backward-compatible evolution: %v", err)
	}
	// A new required field cannot be filled in when reading old records: refused.
	bad := `{"type":"record","name":"Item","namespace":"stacktest","fields":[{"name":"pk","type":"string"},{"name":"qty","type":"long"}]}`
	if _, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: bad, Type: sr.TypeAvro}); err == nil {
		t.Fatal("the registry accepted an incompatible schema under BACKWARD_TRANSITIVE")
	}
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("registry returned invalid JSON %q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
