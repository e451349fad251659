package changes

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// TestRecordJSONKeepsTheRecordAsReceived: a dead letter's JSON holds every image and the position,
// numbers exactly as received (even one DynamoDB would refuse), and parses as GetRecords' shape.
func TestRecordJSONKeepsTheRecordAsReceived(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	rec := st.Record{EventID: aws.String("e1"), EventName: st.OperationTypeModify, Dynamodb: &st.StreamRecord{
		ApproximateCreationDateTime: &at, SequenceNumber: aws.String("000123"), SizeBytes: aws.Int64(42),
		StreamViewType: st.StreamViewTypeNewAndOldImages,
		Keys:           map[string]st.AttributeValue{"pk": &st.AttributeValueMemberS{Value: "a\"b\n"}},
		OldImage:       map[string]st.AttributeValue{"pk": &st.AttributeValueMemberS{Value: "a\"b\n"}, "n": &st.AttributeValueMemberN{Value: "1E+999"}},
		NewImage: map[string]st.AttributeValue{"pk": &st.AttributeValueMemberS{Value: "a\"b\n"}, "m": &st.AttributeValueMemberM{Value: map[string]st.AttributeValue{
			"b": &st.AttributeValueMemberB{Value: []byte{0, 1, 2}}, "l": &st.AttributeValueMemberL{Value: []st.AttributeValue{&st.AttributeValueMemberNULL{Value: true}}}}}},
	}}
	b, err := RecordJSON(rec)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		EventID, EventName string
		Dynamodb           struct {
			ApproximateCreationDateTime float64
			Keys, OldImage, NewImage    map[string]map[string]any
			SequenceNumber              string
			SizeBytes                   int64
			StreamViewType              string
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	d := got.Dynamodb
	if got.EventID != "e1" || got.EventName != "MODIFY" || d.SequenceNumber != "000123" || d.SizeBytes != 42 ||
		d.StreamViewType != "NEW_AND_OLD_IMAGES" || d.ApproximateCreationDateTime != 1_700_000_000.123 ||
		d.Keys["pk"]["S"] != "a\"b\n" || d.OldImage["n"]["N"] != "1E+999" {
		t.Fatalf("record JSON %s", b)
	}
	m := d.NewImage["m"]["M"].(map[string]any)
	if m["b"].(map[string]any)["B"] != "AAEC" || m["l"].(map[string]any)["L"].([]any)[0].(map[string]any)["NULL"] != true {
		t.Fatalf("nested map %v", m)
	}
}
