// Command cmd writes the generated Avro types (run by `make gen` through go generate).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ddb2delta/ddb2delta/proto/avro/internal/codegen"
)

func main() {
	out := flag.String("out", "types_gen.go", "file to write")
	flag.Parse()
	src, err := codegen.Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "codegen:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "codegen:", err)
		os.Exit(1)
	}
}
