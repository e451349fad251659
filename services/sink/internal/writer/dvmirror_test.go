package writer

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/ddb2delta/ddb2delta/services/sink/internal/delta"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/parquetio"
)

// mirrorModel is what a mirror must hold: key → value, or absent.
type mirrorModel map[string]string

// randomBatch makes n changes of random keys among keys, each key always from the same Kafka
// partition (of parts) unless moved is set (a topic that grew: keys land in other partitions).
// Sequence numbers grow with *seq; one change in ten of a key with a row is older than that row
// (a stale change the guard must ignore). The model is updated with the changes that must win.
func randomBatch(rng *rand.Rand, m mirrorModel, last map[string]int, n, keys int, parts int32, moved bool, seq *int, offs map[int32]int64) []Change {
	var batch []Change
	for range n {
		id := fmt.Sprintf("k%04d", rng.IntN(keys))
		p := int32(len(id)+int(id[len(id)-1])) % parts
		if moved {
			p = int32(rng.IntN(int(parts)))
		}
		*seq += 1 + rng.IntN(3)
		s := *seq
		// Older than the table's row: ignored. (Only while the key has a row: like copy-on-write,
		// the guard compares with the table's row, and a deleted key has none.)
		if _, present := m[`[["S","`+id+`"]]`]; present && rng.IntN(10) == 0 {
			s = last[id] - 1
		}
		op := "u"
		switch r := rng.IntN(10); {
		case r < 2:
			op = "d"
		case r < 4:
			op = "c"
		}
		offs[p]++
		batch = append(batch, change(op, id, s, false, map[string]types.AttributeValue{"v": num(s)}, p, offs[p]))
		if s > last[id] {
			last[id] = s
			k := `[["S","` + id + `"]]`
			if op == "d" {
				delete(m, k)
			} else {
				m[k] = fmt.Sprint(s)
			}
		}
	}
	return batch
}

// A mirror under random upserts, deletes and stale changes holds exactly the newest row of every
// key after every batch: across writer restarts (the key index rebuilt from the files and vectors,
// the snapshot from checkpoints), keys moving partitions, and the strategy switching both ways on
// the same table (even seeds start with deletion vectors, odd ones with copy-on-write).
func TestMirrorMatchesModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			rng := rand.New(rand.NewPCG(seed, 7))
			m, last, offs := mirrorModel{}, map[string]int{}, map[int32]int64{}
			seq := 1000
			strategy := StrategyDeletionVectors
			if seed%2 == 1 { // copy-on-write first
				strategy = StrategyCopyOnWrite
			}
			w := newWriter(t, dir, Config{Mode: layout.Mirror, Buckets: 4, MirrorStrategy: strategy, TargetFileRows: 50})
			for b := range 45 {
				switch {
				case b%9 == 8: // restart
					w.Close()
					w = newWriter(t, dir, Config{Mode: layout.Mirror, Buckets: 4, MirrorStrategy: strategy, TargetFileRows: 50})
				case b == 20 || b == 30: // another strategy on the same table, and back
					if strategy == StrategyDeletionVectors {
						strategy = StrategyCopyOnWrite
					} else {
						strategy = StrategyDeletionVectors
					}
					w.Close()
					w = newWriter(t, dir, Config{Mode: layout.Mirror, Buckets: 4, MirrorStrategy: strategy, TargetFileRows: 50})
				}
				batch := randomBatch(rng, m, last, 5+rng.IntN(60), 120, 3, b >= 35, &seq, offs)
				if _, err := w.Write(ctx, batch, nil); err != nil {
					t.Fatalf("batch %d (%s): %v", b, strategy, err)
				}
				if diff := modelDiff(mirrorState(t, w), m); diff != "" {
					t.Fatalf("batch %d (%s): %s", b, strategy, diff)
				}
			}
			dvFiles := 0
			for _, a := range w.Snapshot().Files {
				if a.DeletionVector != nil {
					dvFiles++
				}
			}
			if strategy == StrategyDeletionVectors && dvFiles == 0 {
				t.Fatal("no file has a deletion vector at the end")
			}
		})
	}
}

// modelDiff describes how a mirror's rows differ from the model ("" when they do not).
func modelDiff(got map[string]string, want mirrorModel) string {
	var d []string
	for k, v := range got {
		if w, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s=%s should not be there", k, v))
		} else if w != v {
			d = append(d, fmt.Sprintf("%s=%s, want %s", k, v, w))
		}
	}
	for k, v := range want {
		if _, ok := got[k]; !ok {
			d = append(d, fmt.Sprintf("%s=%s missing", k, v))
		}
	}
	slices.Sort(d)
	return strings.Join(d, "; ")
}

// With the change data feed on, each mirror commit's change data file holds exactly the net
// change of every key it changed (insert; update as pre- and post-image; delete), under both
// strategies, and its protocol lists the feature.
func TestChangeDataFeed(t *testing.T) { strategies(t, testChangeDataFeed) }

func testChangeDataFeed(t *testing.T, strategy string) {
	ctx := context.Background()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(11, 7))
	m, last, offs := mirrorModel{}, map[string]int{}, map[int32]int64{}
	seq := 1000
	w := newWriter(t, dir, Config{Mode: layout.Mirror, Buckets: 4, MirrorStrategy: strategy, TargetFileRows: 40,
		Properties: map[string]string{delta.ConfEnableCDF: "true"}})
	for b := range 12 {
		before := maps.Clone(m)
		batch := randomBatch(rng, m, last, 5+rng.IntN(50), 60, 3, false, &seq, offs)
		res, err := w.Write(ctx, batch, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for k := range mergeKeys(before, m) {
			old, had := before[k]
			now, has := m[k]
			switch {
			case !had && has:
				want[ChangeInsert+" "+k+" "+now] = true
			case had && !has:
				want[ChangeDelete+" "+k+" "+old] = true
			case had && has && old != now:
				want[ChangePreimage+" "+k+" "+old] = true
				want[ChangePostimage+" "+k+" "+now] = true
			}
		}
		data, err := w.Table().Store.Read(ctx, delta.CommitName(res.Version))
		if err != nil {
			t.Fatal(err)
		}
		actions, _ := delta.DecodeCommit(data)
		got := map[string]bool{}
		for _, a := range actions {
			if a.CDC == nil {
				continue
			}
			if a.CDC.DataChange || !strings.HasPrefix(a.CDC.Path, "_change_data/") {
				t.Fatalf("cdc action %+v", a.CDC)
			}
			raw, err := w.Table().Store.Read(ctx, a.CDC.Path)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := parquetio.ReadData(raw)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				c := fmt.Sprint(r[ColChangeType], " ", r[layout.ColKey], " ", r["v"])
				if got[c] {
					t.Fatalf("batch %d: change %s twice", b, c)
				}
				got[c] = true
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("batch %d: change data\n got %v\nwant %v", b, got, want)
		}
	}
	if p := w.Snapshot().Protocol; !slices.Contains(p.WriterFeatures, delta.FeatureChangeDataFeed) || p.MinWriterVersion != 7 {
		t.Fatalf("protocol %+v", p)
	}
}

func mergeKeys(a, b mirrorModel) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}
