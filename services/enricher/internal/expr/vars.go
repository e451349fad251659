package expr

import (
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	celtypes "github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"

	avrov1 "github.com/ddb2delta/ddb2delta/proto/avro/v1"
	"github.com/ddb2delta/ddb2delta/services/platform/ddbavro"
)

// Vars returns an event's variables for evaluation.
func Vars(ev *ddbavro.Event, key avrov1.Key) (map[string]any, error) {
	return VarsFor(ev, key, nil)
}

// VarsFor returns the variables that expressions reading need use (nil: all). Converting an
// image is most of the cost of an event, so an image no expression reads is left empty.
func VarsFor(ev *ddbavro.Event, key avrov1.Key, need map[string]bool) (map[string]any, error) {
	uses := func(image string) bool {
		if need == nil || need[image] {
			return true
		}
		return need["item"] && (image == "before") == (ev.Op == "d")
	}
	var before, after any = map[string]any{}, map[string]any{}
	if uses("before") {
		before = Item(ev.Before)
	}
	if uses("after") {
		after = Item(ev.After)
	}
	k := map[string]any{}
	for _, a := range []*avrov1.KeyAttribute{&key.PartitionKey, key.SortKey} {
		if a == nil {
			continue
		}
		switch {
		case a.S != nil:
			k[a.Name] = *a.S
		case a.N != nil:
			v, err := Value(&types.AttributeValueMemberN{Value: *a.N})
			if err != nil {
				return nil, fmt.Errorf("key %s: %w", a.Name, err)
			}
			k[a.Name] = v
		case a.B != nil:
			k[a.Name] = *a.B
		}
	}
	s := ev.Source
	src := map[string]any{"table": s.Table, "table_arn": s.TableArn, "approximate_creation_ms": s.ApproximateCreationMs.UnixMilli(),
		"stream_view_type": s.StreamViewType, "ttl_delete": s.TTLDelete, "snapshot": s.Snapshot}
	for name, p := range map[string]*string{"shard_id": s.ShardID, "sequence_number": s.SequenceNumber, "event_id": s.EventID} {
		if p != nil {
			src[name] = *p
		}
	}
	item := after // the item as the change left it, or as it was before a delete
	if ev.Op == "d" {
		item = before
	}
	return map[string]any{"op": ev.Op, "before": before, "after": after, "item": item, "key": k, "source": src}, nil
}

// Item is an item image (nil: an empty map) as a CEL map whose attributes are converted when an
// expression reads them: a filter or projection reads a few attributes of items that have tens,
// and converting every one was a fifth of the enricher's CPU. An attribute that cannot be
// converted makes the expression reading it fail, naming the attribute.
func Item(item map[string]types.AttributeValue) any {
	if item == nil {
		item = map[string]types.AttributeValue{}
	}
	return celtypes.NewDynamicMap(lazyAdapter{}, item)
}

// lazyAdapter converts DynamoDB values to CEL values as they are read; other values as CEL does.
type lazyAdapter struct{}

func (lazyAdapter) NativeToValue(v any) ref.Val {
	av, ok := v.(types.AttributeValue)
	if !ok {
		return celtypes.DefaultTypeAdapter.NativeToValue(v)
	}
	if m, ok := av.(*types.AttributeValueMemberM); ok {
		return Item(m.Value).(ref.Val)
	}
	c, err := Value(av)
	if err != nil {
		return celtypes.WrapErr(err)
	}
	return celtypes.DefaultTypeAdapter.NativeToValue(c)
}

// eagerItem converts a whole item image, for a map inside a list.
func eagerItem(item map[string]types.AttributeValue) (map[string]any, error) {
	out := make(map[string]any, len(item))
	for k, v := range item {
		c, err := Value(v)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

// Value converts one DynamoDB value to its CEL value.
func Value(v types.AttributeValue) (any, error) {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return v.Value, nil
	case *types.AttributeValueMemberN:
		n, err := ddbavro.ParseNumber(v.Value)
		if err != nil {
			return nil, err
		}
		if i, ok := n.Int64(); ok {
			return i, nil
		}
		f, err := strconv.ParseFloat(n.String(), 64)
		if err != nil {
			return nil, fmt.Errorf("number %s: %w", v.Value, err)
		}
		return f, nil
	case *types.AttributeValueMemberB:
		return v.Value, nil
	case *types.AttributeValueMemberBOOL:
		return v.Value, nil
	case *types.AttributeValueMemberNULL:
		return nil, nil
	case *types.AttributeValueMemberSS:
		out := make([]any, len(v.Value))
		for i, s := range v.Value {
			out[i] = s
		}
		return out, nil
	case *types.AttributeValueMemberNS:
		out := make([]any, len(v.Value))
		for i, s := range v.Value {
			c, err := Value(&types.AttributeValueMemberN{Value: s})
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case *types.AttributeValueMemberBS:
		out := make([]any, len(v.Value))
		for i, b := range v.Value {
			out[i] = b
		}
		return out, nil
	case *types.AttributeValueMemberL:
		out := make([]any, len(v.Value))
		for i, x := range v.Value {
			c, err := Value(x)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = c
		}
		return out, nil
	case *types.AttributeValueMemberM:
		return eagerItem(v.Value)
	}
	return nil, fmt.Errorf("unsupported attribute value %T", v)
}
