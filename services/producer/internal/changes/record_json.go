package changes

import (
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	ddb "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// RecordJSON returns a stream record as JSON in the shape GetRecords returns it (eventID,
// eventName, dynamodb.Keys/NewImage/OldImage as DynamoDB JSON, SequenceNumber, …), with numbers
// exactly as received. It is what a dead letter keeps of a change that could not be published, so
// that the change can be recovered from it.
func RecordJSON(rec st.Record) ([]byte, error) {
	b := []byte(`{"eventID":`)
	b = ddbavro.AppendJSONString(b, aws.ToString(rec.EventID))
	b = ddbavro.AppendJSONString(append(b, `,"eventName":`...), string(rec.EventName))
	b = ddbavro.AppendJSONString(append(b, `,"eventSource":`...), aws.ToString(rec.EventSource))
	b = ddbavro.AppendJSONString(append(b, `,"awsRegion":`...), aws.ToString(rec.AwsRegion))
	if u := rec.UserIdentity; u != nil {
		b = ddbavro.AppendJSONString(append(b, `,"userIdentity":{"type":`...), aws.ToString(u.Type))
		b = append(ddbavro.AppendJSONString(append(b, `,"principalId":`...), aws.ToString(u.PrincipalId)), '}')
	}
	sr := rec.Dynamodb
	if sr == nil {
		return append(b, '}'), nil
	}
	b = append(b, `,"dynamodb":{`...)
	if sr.ApproximateCreationDateTime != nil {
		ms := sr.ApproximateCreationDateTime.UnixMilli()
		b = append(b, `"ApproximateCreationDateTime":`...)
		b = strconv.AppendFloat(b, float64(ms)/1000, 'f', -1, 64)
		b = append(b, ',')
	}
	var err error
	for _, img := range []struct {
		name string
		item map[string]st.AttributeValue
	}{{"Keys", sr.Keys}, {"NewImage", sr.NewImage}, {"OldImage", sr.OldImage}} {
		if img.item == nil {
			continue
		}
		b = append(b, `"`+img.name+`":`...)
		if b, err = AppendItemJSON(b, img.item); err != nil {
			return nil, err
		}
		b = append(b, ',')
	}
	b = ddbavro.AppendJSONString(append(b, `"SequenceNumber":`...), aws.ToString(sr.SequenceNumber))
	b = strconv.AppendInt(append(b, `,"SizeBytes":`...), aws.ToInt64(sr.SizeBytes), 10)
	b = ddbavro.AppendJSONString(append(b, `,"StreamViewType":`...), string(sr.StreamViewType))
	return append(b, "}}"...), nil
}

// AppendItemJSON appends a Streams item as DynamoDB JSON, numbers as received.
func AppendItemJSON(b []byte, item map[string]st.AttributeValue) ([]byte, error) {
	it, err := Item(item)
	if err != nil {
		return nil, err
	}
	return ddbavro.AppendRawItemJSON(b, it)
}

// ItemJSON returns an item read by a snapshot scan as DynamoDB JSON, numbers as received.
func ItemJSON(item map[string]ddb.AttributeValue) ([]byte, error) {
	return ddbavro.AppendRawItemJSON(nil, item)
}

// KeyAttributes returns the key attributes of an item (those it has).
func (t Table) KeyAttributes(item map[string]ddb.AttributeValue) map[string]ddb.AttributeValue {
	out := map[string]ddb.AttributeValue{}
	for _, a := range []string{t.PartitionKey, t.SortKey} {
		if v, ok := item[a]; ok && a != "" {
			out[a] = v
		}
	}
	return out
}
