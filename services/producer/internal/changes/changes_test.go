package changes

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ddb "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

var table = Table{Name: "orders", StreamARN: "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2026", ViewType: "NEW_AND_OLD_IMAGES", PartitionKey: "pk", SortKey: "sk"}

func TestConvert(t *testing.T) {
	created := time.Unix(1795500000, 0)
	rec := st.Record{
		EventID: aws.String("e-1"), EventName: st.OperationTypeRemove,
		UserIdentity: &st.Identity{Type: aws.String("Service"), PrincipalId: aws.String("dynamodb.amazonaws.com")},
		Dynamodb: &st.StreamRecord{
			SequenceNumber: aws.String("111"), ApproximateCreationDateTime: &created,
			Keys: map[string]st.AttributeValue{"pk": &st.AttributeValueMemberS{Value: "a"}, "sk": &st.AttributeValueMemberN{Value: "1.50"}},
			OldImage: map[string]st.AttributeValue{
				"pk": &st.AttributeValueMemberS{Value: "a"}, "sk": &st.AttributeValueMemberN{Value: "1.50"},
				"m": &st.AttributeValueMemberM{Value: map[string]st.AttributeValue{"l": &st.AttributeValueMemberL{Value: []st.AttributeValue{
					&st.AttributeValueMemberBS{Value: [][]byte{{1}}}, &st.AttributeValueMemberNULL{Value: true}}}}},
			},
		},
	}
	now := time.Unix(1795500001, 123456789)
	ev, key, err := Convert(table, "shard-1", rec, now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Op != "d" || ev.After != nil || !ev.Source.TTLDelete || *ev.Source.SequenceNumber != "111" || *ev.Source.ShardID != "shard-1" ||
		ev.Source.TableArn != "arn:aws:dynamodb:us-east-1:1:table/orders" || ev.TsMs.UnixNano() != now.Truncate(time.Millisecond).UnixNano() {
		t.Fatalf("event = %+v source %+v", ev, ev.Source)
	}
	wantM := &ddb.AttributeValueMemberM{Value: map[string]ddb.AttributeValue{"l": &ddb.AttributeValueMemberL{Value: []ddb.AttributeValue{
		&ddb.AttributeValueMemberBS{Value: [][]byte{{1}}}, &ddb.AttributeValueMemberNULL{Value: true}}}}}
	if !reflect.DeepEqual(ev.Before["m"], wantM) {
		t.Fatalf("nested image = %#v", ev.Before["m"])
	}
	if *key.PartitionKey.S != "a" || *key.SortKey.N != "1.5" {
		t.Fatalf("key = %+v %+v", key.PartitionKey, key.SortKey)
	}
}

func TestConvertNamesTheBadRecord(t *testing.T) {
	rec := st.Record{EventName: st.OperationTypeInsert, Dynamodb: &st.StreamRecord{SequenceNumber: aws.String("42"),
		Keys: map[string]st.AttributeValue{"pk": &st.AttributeValueMemberS{Value: "a"}}}}
	_, _, err := Convert(table, "shard-1", rec, time.Now())
	if err == nil || !strings.Contains(err.Error(), "table orders shard shard-1 sequence number 42") || !strings.Contains(err.Error(), "sk is missing") {
		t.Fatalf("err = %v", err)
	}
}

func TestSnapshotRead(t *testing.T) {
	item := map[string]ddb.AttributeValue{"pk": &ddb.AttributeValueMemberS{Value: "a"}, "sk": &ddb.AttributeValueMemberN{Value: "2"},
		"v": &ddb.AttributeValueMemberBOOL{Value: true}}
	scanned, now := time.Unix(1795500000, 999999999), time.Unix(1795500002, 0)
	ev, key, err := SnapshotRead(table, item, "4899", scanned, now)
	if err != nil {
		t.Fatal(err)
	}
	s := ev.Source
	if ev.Op != "r" || ev.Before != nil || !reflect.DeepEqual(ev.After, item) || !s.Snapshot || *s.SequenceNumber != "4899" ||
		s.StreamArn != nil || s.ShardID != nil || s.EventID != nil || s.ApproximateCreationMs.UnixMilli() != 1795500000999 ||
		s.TableArn != "arn:aws:dynamodb:us-east-1:1:table/orders" || s.StreamViewType != "NEW_AND_OLD_IMAGES" {
		t.Fatalf("event %+v source %+v", ev, s)
	}
	if *key.PartitionKey.S != "a" || *key.SortKey.N != "2" {
		t.Fatalf("key %+v", key)
	}
	delete(item, "sk")
	if _, _, err := SnapshotRead(table, item, "1", scanned, now); err == nil || !strings.Contains(err.Error(), "table orders snapshot item") {
		t.Fatalf("item without its sort key: %v", err)
	}
}
