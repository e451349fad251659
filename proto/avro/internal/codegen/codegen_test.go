package codegen

import (
	"bytes"
	"os"
	"testing"
)

// TestGeneratedCodeIsCurrent fails when an .avsc file changed without `make gen`.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	want, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../v1/types_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("proto/avro/v1/types_gen.go is stale: run `make gen` and commit the result")
	}
}
