// Package changes turns DynamoDB Streams records into ddb2delta change events and record keys.
package changes

import (
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ddb "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// Table is what conversion needs to know of a table and its stream.
type Table struct {
	Name         string
	StreamARN    string
	ViewType     string
	PartitionKey string
	SortKey      string
}

// TableARN derives the table ARN from its stream ARN (<table arn>/stream/<label>).
func (t Table) TableARN() string {
	if i := strings.Index(t.StreamARN, "/stream/"); i > 0 {
		return t.StreamARN[:i]
	}
	return t.StreamARN
}

// Convert returns the change event and the record key of one stream record of shard.
// now is the publish time (ts_ms).
func Convert(t Table, shard string, rec st.Record, now time.Time) (*ddbavro.Event, avrov1.Key, error) {
	var key avrov1.Key
	sr := rec.Dynamodb
	if sr == nil {
		return nil, key, fmt.Errorf("stream record %s has no dynamodb section", aws.ToString(rec.EventID))
	}
	seq := aws.ToString(sr.SequenceNumber)
	where := func(err error) error {
		return fmt.Errorf("table %s shard %s sequence number %s: %w", t.Name, shard, seq, err)
	}
	ev := &ddbavro.Event{TsMs: now.UTC().Truncate(time.Millisecond)}
	switch rec.EventName {
	case st.OperationTypeInsert:
		ev.Op = "c"
	case st.OperationTypeModify:
		ev.Op = "u"
	case st.OperationTypeRemove:
		ev.Op = "d"
	default:
		return nil, key, where(fmt.Errorf("unknown event name %q", rec.EventName))
	}
	var err error
	if ev.Before, err = Item(sr.OldImage); err != nil {
		return nil, key, where(fmt.Errorf("old image: %w", err))
	}
	if ev.After, err = Item(sr.NewImage); err != nil {
		return nil, key, where(fmt.Errorf("new image: %w", err))
	}
	keys, err := Item(sr.Keys)
	if err != nil {
		return nil, key, where(fmt.Errorf("keys: %w", err))
	}
	if key, err = ddbavro.KeyOf(keys, t.PartitionKey, t.SortKey); err != nil {
		return nil, key, where(err)
	}
	created := time.Time{}
	if sr.ApproximateCreationDateTime != nil {
		created = sr.ApproximateCreationDateTime.UTC()
	}
	ttl := rec.UserIdentity != nil && aws.ToString(rec.UserIdentity.Type) == "Service" &&
		aws.ToString(rec.UserIdentity.PrincipalId) == "dynamodb.amazonaws.com"
	viewType := string(sr.StreamViewType)
	if viewType == "" {
		viewType = t.ViewType
	}
	ev.Source = avrov1.Source{
		Table: t.Name, TableArn: t.TableARN(), StreamArn: aws.String(t.StreamARN), ShardID: aws.String(shard),
		SequenceNumber: aws.String(seq), ApproximateCreationMs: created, EventID: rec.EventID,
		StreamViewType: viewType, TTLDelete: ttl,
	}
	return ev, key, nil
}

// SnapshotRead returns the change event (op r) and record key of an item a snapshot scan read.
// position is the snapshot's stream position, carried as the sequence number so that a snapshot
// row ranks below every change made after the scan started (see package snapshot); scanned is when
// the page was read, now the publish time.
func SnapshotRead(t Table, item map[string]ddb.AttributeValue, position string, scanned, now time.Time) (*ddbavro.Event, avrov1.Key, error) {
	key, err := ddbavro.KeyOf(item, t.PartitionKey, t.SortKey)
	if err != nil {
		return nil, key, fmt.Errorf("table %s snapshot item: %w", t.Name, err)
	}
	ev := &ddbavro.Event{Op: "r", After: item, TsMs: now.UTC().Truncate(time.Millisecond), Source: avrov1.Source{
		Table: t.Name, TableArn: t.TableARN(), SequenceNumber: aws.String(position),
		ApproximateCreationMs: scanned.UTC().Truncate(time.Millisecond), StreamViewType: t.ViewType, Snapshot: true,
	}}
	return ev, key, nil
}

// Item converts a Streams item (or nil) to the DynamoDB types the rest of ddb2delta uses.
func Item(in map[string]st.AttributeValue) (map[string]ddb.AttributeValue, error) {
	if in == nil {
		return nil, nil
	}
	out := make(map[string]ddb.AttributeValue, len(in))
	for k, v := range in {
		c, err := Value(v)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

// Value converts one Streams attribute value.
func Value(v st.AttributeValue) (ddb.AttributeValue, error) {
	switch v := v.(type) {
	case *st.AttributeValueMemberS:
		return &ddb.AttributeValueMemberS{Value: v.Value}, nil
	case *st.AttributeValueMemberN:
		return &ddb.AttributeValueMemberN{Value: v.Value}, nil
	case *st.AttributeValueMemberB:
		return &ddb.AttributeValueMemberB{Value: v.Value}, nil
	case *st.AttributeValueMemberBOOL:
		return &ddb.AttributeValueMemberBOOL{Value: v.Value}, nil
	case *st.AttributeValueMemberNULL:
		return &ddb.AttributeValueMemberNULL{Value: v.Value}, nil
	case *st.AttributeValueMemberSS:
		return &ddb.AttributeValueMemberSS{Value: v.Value}, nil
	case *st.AttributeValueMemberNS:
		return &ddb.AttributeValueMemberNS{Value: v.Value}, nil
	case *st.AttributeValueMemberBS:
		return &ddb.AttributeValueMemberBS{Value: v.Value}, nil
	case *st.AttributeValueMemberL:
		out := make([]ddb.AttributeValue, len(v.Value))
		for i, x := range v.Value {
			c, err := Value(x)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = c
		}
		return &ddb.AttributeValueMemberL{Value: out}, nil
	case *st.AttributeValueMemberM:
		m, err := Item(v.Value)
		if err != nil {
			return nil, err
		}
		return &ddb.AttributeValueMemberM{Value: m}, nil
	case nil:
		return nil, fmt.Errorf("no value")
	}
	return nil, fmt.Errorf("unsupported attribute value type %T", v)
}
