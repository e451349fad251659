package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestLocalWriteIfAbsentHasOneWinner(t *testing.T) {
	ctx := context.Background()
	st, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const writers = 16
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = st.WriteIfAbsent(ctx, "_delta_log/00000000000000000001.json", []byte(fmt.Sprintf("writer %d\n", i)))
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, ErrExists):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	got, err := st.Read(ctx, "_delta_log/00000000000000000001.json")
	if err != nil || string(got) != fmt.Sprintf("writer %d\n", winner) {
		t.Fatalf("content %q, %v; want the winner's", got, err)
	}
	// No temporary files are left, and listing hides them anyway.
	entries, _ := os.ReadDir(filepath.Join(st.root, "_delta_log"))
	if len(entries) != 1 {
		t.Fatalf("_delta_log holds %d entries", len(entries))
	}
}

func TestLocalListReadWriteDelete(t *testing.T) {
	ctx := context.Background()
	st, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"_delta_log/00000000000000000000.json", "_delta_log/00000000000000000001.json", "_date=2026-11-25/part-1.parquet", "part-0.parquet"} {
		if err := st.Write(ctx, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := st.List(ctx, "_delta_log/", "_delta_log/00000000000000000000.json")
	if err != nil || len(objs) != 1 || objs[0].Name != "_delta_log/00000000000000000001.json" || objs[0].Size != 36 {
		t.Fatalf("list after version 0: %+v %v", objs, err)
	}
	all, err := st.List(ctx, "", "")
	if err != nil || len(all) != 4 || all[0].Name != "_date=2026-11-25/part-1.parquet" {
		t.Fatalf("list all: %+v %v", all, err)
	}
	if err := st.Write(ctx, "part-0.parquet", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := st.Read(ctx, "part-0.parquet"); string(b) != "new" {
		t.Fatalf("overwrite: %q", b)
	}
	if err := st.Delete(ctx, "part-0.parquet"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "part-0.parquet"); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if _, err := st.Read(ctx, "part-0.parquet"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read after delete: %v", err)
	}
	if err := st.Write(ctx, "../escape", nil); err == nil {
		t.Fatal("a name outside the table was accepted")
	}
}

func TestParseLocation(t *testing.T) {
	for in, want := range map[string]Location{
		"/data/orders":              {Scheme: "file", Path: "/data/orders"},
		"file:///data/orders":       {Scheme: "file", Path: "/data/orders"},
		"s3://bucket/tables/orders": {Scheme: "s3", Bucket: "bucket", Path: "tables/orders"},
		"s3://bucket":               {Scheme: "s3", Bucket: "bucket"},
	} {
		got, err := ParseLocation(in)
		if err != nil || got != want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"gs://b/x", "s3:///x"} {
		if _, err := ParseLocation(bad); err == nil {
			t.Errorf("ParseLocation(%q) accepted", bad)
		}
	}
}
