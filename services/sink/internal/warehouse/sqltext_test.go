package warehouse

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/deltatype"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/layout"
	"github.com/ddb2delta/ddb2delta/services/sink/internal/writer"
)

func TestParseIdent(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      bool
	}{
		{in: "orders", want: "main.cdc.orders"},
		{in: "raw.orders", want: "main.raw.orders"},
		{in: "lake.raw.orders", want: "lake.raw.orders"},
		{in: "`my-cat`.`a.b`.t", want: "my-cat.a.b.t"},
		{in: "a.b.c.d", err: true},
		{in: "a..c", err: true},
		{in: "`open", err: true},
		{in: "", err: true},
	} {
		got, err := ParseIdent(c.in, "main", "cdc")
		if (err != nil) != c.err {
			t.Errorf("ParseIdent(%q): error %v, want error %v", c.in, err, c.err)
			continue
		}
		if err == nil && got.String() != c.want {
			t.Errorf("ParseIdent(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	if _, err := ParseIdent("orders", "", "cdc"); err == nil {
		t.Error("a one-level name without a default catalog was accepted")
	}
	id, _ := ParseIdent("`my-cat`.`a.b`.`we``ird`", "", "")
	if got, want := id.SQL(), "`my-cat`.`a.b`.`we``ird`"; got != want {
		t.Errorf("SQL() = %s, want %s", got, want)
	}
}

func TestQuoteString(t *testing.T) {
	if got, want := quoteString(`it's a \ path`), `'it\'s a \\ path'`; got != want {
		t.Errorf("quoteString = %s, want %s", got, want)
	}
}

var testSchema = &deltatype.StructType{Fields: []deltatype.StructField{
	{Name: "id", Type: deltatype.String},
	{Name: "amount", Type: deltatype.Decimal(12, 2)},
	{Name: "address", Type: deltatype.StructOf(
		deltatype.StructField{Name: "zip", Type: deltatype.String},
		deltatype.StructField{Name: "geo", Type: deltatype.StructOf(deltatype.StructField{Name: "lat", Type: deltatype.Double})})},
	{Name: "tags", Type: deltatype.ArrayOf(deltatype.String)},
	{Name: "_key", Type: deltatype.String},
	{Name: "_sequence_number", Type: deltatype.String},
	{Name: "_kafka_offset", Type: deltatype.Long},
}}

func TestCreateTable(t *testing.T) {
	id := Ident{"main", "cdc", "orders"}
	got := createTable(id, testSchema, []string{"_date"}, "it's mine", map[string]string{"b": "2", "a": "1"})
	want := "CREATE TABLE `main`.`cdc`.`orders` (`id` STRING, `amount` DECIMAL(12,2), " +
		"`address` STRUCT<`zip`: STRING, `geo`: STRUCT<`lat`: DOUBLE>>, `tags` ARRAY<STRING>, `_key` STRING, `_sequence_number` STRING, `_kafka_offset` BIGINT) " +
		"USING DELTA PARTITIONED BY (`_date`) COMMENT 'it\\'s mine' TBLPROPERTIES ('a' = '1', 'b' = '2')"
	if got != want {
		t.Errorf("createTable:\n got %s\nwant %s", got, want)
	}
}

func TestProjectRebuildsStructsByName(t *testing.T) {
	table := testSchema.Fields[2].Type
	got := project(table, &table, "f.`address`")
	want := "CASE WHEN f.`address` IS NULL THEN NULL ELSE named_struct('zip', f.`address`.`zip`, 'geo', " +
		"CASE WHEN f.`address`.`geo` IS NULL THEN NULL ELSE named_struct('lat', f.`address`.`geo`.`lat`) END) END"
	if got != want {
		t.Errorf("project:\n got %s\nwant %s", got, want)
	}
	// A file staged before the table grew: what it lacks is null, in the table's place.
	older := deltatype.StructOf(deltatype.StructField{Name: "zip", Type: deltatype.String})
	got = staged{table: testSchema, file: &deltatype.StructType{Fields: []deltatype.StructField{{Name: "id", Type: deltatype.String}, {Name: "address", Type: older}}}}.columns("")
	want = "`id` AS `id`, CAST(NULL AS DECIMAL(12,2)) AS `amount`, CASE WHEN `address` IS NULL THEN NULL ELSE named_struct('zip', `address`.`zip`, " +
		"'geo', CAST(NULL AS STRUCT<`lat`: DOUBLE>)) END AS `address`, CAST(NULL AS ARRAY<STRING>) AS `tags`, CAST(NULL AS STRING) AS `_key`, " +
		"CAST(NULL AS STRING) AS `_sequence_number`, CAST(NULL AS BIGINT) AS `_kafka_offset`"
	if got != want {
		t.Errorf("columns of an older file:\n got %s\nwant %s", got, want)
	}
}

func TestAddedColumns(t *testing.T) {
	prev := &deltatype.StructType{Fields: []deltatype.StructField{
		{Name: "id", Type: deltatype.String},
		{Name: "address", Type: deltatype.StructOf(deltatype.StructField{Name: "zip", Type: deltatype.String})},
	}}
	added, err := addedColumns(prev, testSchema, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range added {
		got = append(got, addColumn(Ident{"c", "s", "t"}, c))
	}
	want := []string{
		"ALTER TABLE `c`.`s`.`t` ADD COLUMNS (`amount` DECIMAL(12,2))",
		"ALTER TABLE `c`.`s`.`t` ADD COLUMNS (`address`.`geo` STRUCT<`lat`: DOUBLE>)",
		"ALTER TABLE `c`.`s`.`t` ADD COLUMNS (`tags` ARRAY<STRING>)",
		"ALTER TABLE `c`.`s`.`t` ADD COLUMNS (`_key` STRING)",
		"ALTER TABLE `c`.`s`.`t` ADD COLUMNS (`_sequence_number` STRING)",
		"ALTER TABLE `c`.`s`.`t` ADD COLUMNS (`_kafka_offset` BIGINT)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("addedColumns:\n got %s\nwant %s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	changed := &deltatype.StructType{Fields: []deltatype.StructField{{Name: "id", Type: deltatype.Long}}}
	if _, err := addedColumns(prev, changed, nil); err == nil || !strings.Contains(err.Error(), "column id is STRING in the table and BIGINT") {
		t.Errorf("a changed type: error %v", err)
	}
	u := unionSchema(prev, testSchema)
	if again, _ := addedColumns(u, testSchema, nil); len(again) != 0 {
		t.Errorf("the union lacks %v", again)
	}
	if extra, _ := addedColumns(testSchema, u, nil); len(extra) != 0 {
		t.Errorf("the union has more than both: %v", extra)
	}
}

func TestMergeMirrorGuardsSequence(t *testing.T) {
	s := &deltatype.StructType{Fields: []deltatype.StructField{{Name: "id", Type: deltatype.String}, {Name: "_key", Type: deltatype.String}}}
	got := mergeMirror(Ident{"c", "s", "t"}, staged{table: s, file: s, path: "s3://b/p/batch-1.parquet"}, partitionFilter(map[string][]int32{"t2": {3, 1}, "t1": {0}}))
	for _, want := range []string{
		"MERGE INTO `c`.`s`.`t` AS t USING (SELECT f.`id` AS `id`, f.`_key` AS `_key` FROM parquet.`s3://b/p/batch-1.parquet` AS f " +
			"WHERE (f.`_kafka_topic` = 't1' AND f.`_kafka_partition` IN (0)) OR (f.`_kafka_topic` = 't2' AND f.`_kafka_partition` IN (1, 3))) AS s ON t.`_key` = s.`_key`",
		" WHEN MATCHED AND s.`_op` = 'd' AND " + newer + " THEN DELETE",
		" WHEN MATCHED AND " + newer + " THEN UPDATE SET t.`id` = s.`id`, t.`_key` = s.`_key`",
		" WHEN NOT MATCHED AND s.`_op` <> 'd' THEN INSERT (`id`, `_key`) VALUES (s.`id`, s.`_key`)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("mergeMirror lacks %q:\n%s", want, got)
		}
	}
	if partitionFilter(nil) != "FALSE" {
		t.Error("no partitions must select nothing")
	}
}

func TestRecordOffsets(t *testing.T) {
	got := recordOffsets(Ident{"c", "s", "ddb2delta_offsets"}, "orders", []offsetRow{{tp: tp{"cdc", 0}, next: 11, file: "batch-a.parquet", first: 5, prev: 5},
		{tp: tp{"cdc", 1}, next: 3, prev: -1}})
	for _, want := range []string{
		"VALUES ('orders', 'cdc', 0, 11, 'batch-a.parquet', 5, 5), ('orders', 'cdc', 1, 3, CAST(NULL AS STRING), 0, -1)",
		"ON o.table_name = 'orders' AND o.table_name = v.table_name",
		"WHEN MATCHED AND o.next_offset = v.prev_offset THEN UPDATE", // compare-and-set
		"WHEN NOT MATCHED AND v.prev_offset = -1 THEN INSERT",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("recordOffsets lacks %q:\n%s", want, got)
		}
	}
}

func TestBatchNameIsDeterministic(t *testing.T) {
	a := batchName("orders", map[tp]int64{{"t", 0}: 1, {"t", 1}: 5}, map[tp]int64{{"t", 0}: 9, {"t", 1}: 7})
	b := batchName("orders", map[tp]int64{{"t", 1}: 5, {"t", 0}: 1}, map[tp]int64{{"t", 1}: 7, {"t", 0}: 9})
	c := batchName("orders", map[tp]int64{{"t", 0}: 1, {"t", 1}: 5}, map[tp]int64{{"t", 0}: 10, {"t", 1}: 7})
	if a != b || a == c || !strings.HasSuffix(a, ".parquet") {
		t.Errorf("batch names %s %s %s", a, b, c)
	}
}

// change builds a change of item id at sequence seq, read at topic cdc, partition p, offset off.
func change(op, id string, seq int, p int32, off int64) writer.Change {
	item := map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}, "v": &types.AttributeValueMemberN{Value: fmt.Sprint(seq)}}
	ev := &ddbavro.Event{Op: op, TsMs: time.UnixMilli(1795500000000 + int64(seq)),
		Source: avrov1.Source{Table: "orders", TableArn: "arn:aws:dynamodb:us-east-1:1:table/orders", SequenceNumber: aws.String(fmt.Sprint(seq)),
			StreamArn: aws.String("arn:aws:dynamodb:us-east-1:1:table/orders/stream/1"), ApproximateCreationMs: time.UnixMilli(1795500000000 + int64(seq))}}
	if op == "d" {
		ev.Before = item
	} else {
		ev.After = item
	}
	return writer.Change{Event: ev, Key: avrov1.Key{PartitionKey: avrov1.KeyAttribute{Name: "id", S: aws.String(id)}},
		Origin: layout.Origin{Topic: "cdc", Partition: p, Offset: off}}
}
