package streamsource

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The wire protocol is AWS JSON 1.0: POST /, the operation in X-Amz-Target
// (DynamoDBStreams_20120810.<Op> or DynamoDB_20120810.<Op>), JSON in and out, timestamps as epoch
// seconds, errors as HTTP 400 with {"__type": "...#<Code>", "message": ...}.

const (
	streamsTarget  = "DynamoDBStreams_20120810."
	dynamoDBTarget = "DynamoDB_20120810."
	// pageBytes is GetRecords' response limit: 1 MB of records, or Limit records (at most 1,000).
	pageBytes      = 1 << 20
	maxPageRecords = 1000
	// iteratorLife is how long a shard iterator stays valid, as in DynamoDB Streams.
	iteratorLife = 15 * time.Minute
)

// Handler serves the Streams API for the source's streams and DescribeTable for its tables;
// everything else (another table, the lease table's reads and writes) goes to upstream, or is
// refused when upstream is nil.
func (s *Source) Handler(upstream *url.URL) http.Handler {
	var proxy *httputil.ReverseProxy
	if upstream != nil {
		// No transparent gzip: DynamoDB's X-Amz-Crc32 is of the bytes sent, which must reach the
		// client as they are.
		proxy = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(upstream) },
			Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/progress" {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(s.Progress())
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		forward := func() {
			s.count(func(st *Stats) { st.Forwarded++ })
			if proxy == nil {
				writeError(w, "UnknownOperationException", "this source serves only its own streams and tables")
				return
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
			proxy.ServeHTTP(w, r)
		}
		target := r.Header.Get("X-Amz-Target")
		var ok bool
		switch target {
		case streamsTarget + "GetRecords":
			ok = s.getRecords(w, body)
		case streamsTarget + "GetShardIterator":
			ok = s.getShardIterator(w, body)
		case streamsTarget + "DescribeStream":
			ok = s.describeStream(w, body)
		case streamsTarget + "ListStreams":
			ok = s.listStreams(w, body)
		case dynamoDBTarget + "DescribeTable":
			ok = s.describeTable(w, body)
		}
		if !ok {
			forward()
		}
	})
}

func (s *Source) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": "com.amazonaws.dynamodb.v20120810#" + code, "message": msg})
}

// epochSeconds is a timestamp as the JSON 1.0 protocol writes it.
func epochSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// allow records a call in a one-second sliding window and reports whether it is under limit.
func allow(calls *[]time.Time, limit int, now time.Time) bool {
	if limit < 0 {
		return true
	}
	kept := (*calls)[:0]
	for _, c := range *calls {
		if now.Sub(c) < time.Second {
			kept = append(kept, c)
		}
	}
	*calls = kept
	if len(kept) >= limit {
		return false
	}
	*calls = append(*calls, now)
	return true
}

func (s *Source) describeTable(w http.ResponseWriter, body []byte) bool {
	var in struct{ TableName string }
	if json.Unmarshal(body, &in) != nil {
		return false
	}
	st := s.byTable[in.TableName]
	if st == nil {
		return false
	}
	s.count(func(x *Stats) { x.DescribeTable++ })
	writeJSON(w, map[string]any{"Table": map[string]any{
		"TableName": st.table, "TableStatus": "ACTIVE", "CreationDateTime": epochSeconds(st.created),
		"TableArn":             fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s", s.cfg.Region, s.cfg.Account, st.table),
		"KeySchema":            keySchema,
		"AttributeDefinitions": []map[string]string{{"AttributeName": "id", "AttributeType": "S"}, {"AttributeName": "line", "AttributeType": "N"}},
		"BillingModeSummary":   map[string]string{"BillingMode": "PAY_PER_REQUEST"},
		"StreamSpecification":  map[string]any{"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"},
		"LatestStreamArn":      st.arn, "LatestStreamLabel": st.label,
	}})
	return true
}

var keySchema = []map[string]string{{"AttributeName": "id", "KeyType": "HASH"}, {"AttributeName": "line", "KeyType": "RANGE"}}

func (s *Source) listStreams(w http.ResponseWriter, body []byte) bool {
	var in struct {
		TableName               string
		Limit                   int
		ExclusiveStartStreamArn string
	}
	if json.Unmarshal(body, &in) != nil {
		return false
	}
	if in.TableName != "" && s.byTable[in.TableName] == nil {
		return false
	}
	s.count(func(x *Stats) { x.ListStreams++ })
	limit := in.Limit
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	var out []map[string]string
	var last string
	started := in.ExclusiveStartStreamArn == ""
	for _, st := range s.streams {
		if !started {
			started = st.arn == in.ExclusiveStartStreamArn
			continue
		}
		if in.TableName != "" && st.table != in.TableName {
			continue
		}
		if len(out) == limit {
			last = out[len(out)-1]["StreamArn"]
			break
		}
		out = append(out, map[string]string{"StreamArn": st.arn, "StreamLabel": st.label, "TableName": st.table})
	}
	resp := map[string]any{"Streams": out}
	if last != "" {
		resp["LastEvaluatedStreamArn"] = last
	}
	writeJSON(w, resp)
	return true
}

func (s *Source) describeStream(w http.ResponseWriter, body []byte) bool {
	var in struct {
		StreamArn             string
		Limit                 int
		ExclusiveStartShardId string
		ShardFilter           *struct{ Type, ShardId string }
	}
	if json.Unmarshal(body, &in) != nil {
		return false
	}
	st := s.byARN[in.StreamArn]
	if st == nil {
		return false
	}
	limit := in.Limit
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.DescribeStream++
	if !allow(&s.describe, s.cfg.DescribeStreamPerSecond, time.Now()) {
		s.stats.Throttled++
		writeError(w, "LimitExceededException", "DescribeStream: rate exceeded for the account")
		return true
	}
	s.advance(st, s.now())
	var pick []*shard
	switch {
	case in.ShardFilter != nil && in.ShardFilter.Type == "CHILD_SHARDS":
		parent := st.byID[in.ShardFilter.ShardId]
		if parent == nil {
			writeError(w, "ResourceNotFoundException", "Requested resource not found: shard "+in.ShardFilter.ShardId)
			return true
		}
		pick = parent.children
	case in.ShardFilter != nil:
		writeError(w, "ValidationException", "unknown ShardFilter type "+in.ShardFilter.Type)
		return true
	default:
		started := in.ExclusiveStartShardId == ""
		for _, sh := range st.shards {
			if !started {
				started = sh.id == in.ExclusiveStartShardId
				continue
			}
			pick = append(pick, sh)
		}
	}
	desc := map[string]any{"StreamArn": st.arn, "StreamLabel": st.label, "StreamStatus": "ENABLED",
		"StreamViewType": "NEW_AND_OLD_IMAGES", "TableName": st.table, "KeySchema": keySchema,
		"CreationRequestDateTime": epochSeconds(st.created)}
	if len(pick) > limit {
		pick = pick[:limit]
		desc["LastEvaluatedShardId"] = pick[limit-1].id
	}
	shards := make([]map[string]any, 0, len(pick))
	for _, sh := range pick {
		rng := map[string]string{"StartingSequenceNumber": string(sequence(nil, sh.lin, sh.start))}
		if sh.children != nil {
			rng["EndingSequenceNumber"] = string(sequence(nil, sh.lin, sh.start+sh.total-1))
		}
		m := map[string]any{"ShardId": sh.id, "SequenceNumberRange": rng}
		if sh.parent != "" {
			m["ParentShardId"] = sh.parent
		}
		shards = append(shards, m)
	}
	desc["Shards"] = shards
	writeJSON(w, map[string]any{"StreamDescription": desc})
	return true
}

// An iterator is "<stream index>/<shard id>/<record index>/<issued, unix ms>".
func (s *Source) iterator(st *stream, sh *shard, j uint64, now time.Time) string {
	for i, x := range s.streams {
		if x == st {
			return fmt.Sprintf("%d/%s/%d/%d", i, sh.id, j, now.UnixMilli())
		}
	}
	return ""
}

func (s *Source) getShardIterator(w http.ResponseWriter, body []byte) bool {
	var in struct{ StreamArn, ShardId, ShardIteratorType, SequenceNumber string }
	if json.Unmarshal(body, &in) != nil {
		return false
	}
	st := s.byARN[in.StreamArn]
	if st == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.GetShardIterator++
	now := s.now()
	s.advance(st, now)
	sh := st.byID[in.ShardId]
	if sh == nil {
		writeError(w, "ResourceNotFoundException", "Requested resource not found: Shard does not exist")
		return true
	}
	var j uint64
	switch in.ShardIteratorType {
	case "TRIM_HORIZON":
	case "LATEST":
		j = s.available(sh, now)
	case "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER":
		lin, i, ok := parseSequence(in.SequenceNumber)
		if !ok || lin != sh.lin.id || i < sh.start || (sh.children != nil && i >= sh.start+sh.total) {
			writeError(w, "ValidationException", fmt.Sprintf("Invalid SequenceNumber %q for shard %s", in.SequenceNumber, sh.id))
			return true
		}
		j = i - sh.start
		if in.ShardIteratorType == "AFTER_SEQUENCE_NUMBER" {
			j++
		}
	default:
		writeError(w, "ValidationException", "unknown ShardIteratorType "+in.ShardIteratorType)
		return true
	}
	writeJSON(w, map[string]string{"ShardIterator": s.iterator(st, sh, j, time.Now())})
	return true
}

func (s *Source) getRecords(w http.ResponseWriter, body []byte) bool {
	var in struct {
		ShardIterator string
		Limit         int
	}
	if json.Unmarshal(body, &in) != nil {
		return false
	}
	parts := strings.Split(in.ShardIterator, "/")
	if len(parts) != 4 {
		return false // not ours: DynamoDB Local's
	}
	si, err1 := strconv.Atoi(parts[0])
	j, err2 := strconv.ParseUint(parts[2], 10, 64)
	issued, err3 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || si < 0 || si >= len(s.streams) {
		return false
	}
	st := s.streams[si]
	limit := in.Limit
	if limit <= 0 || limit > maxPageRecords {
		limit = maxPageRecords
	}
	wall := time.Now()
	s.mu.Lock()
	s.stats.GetRecords++
	sh := st.byID[parts[1]]
	if sh == nil {
		s.mu.Unlock()
		writeError(w, "ResourceNotFoundException", "Requested resource not found: Shard does not exist")
		return true
	}
	if wall.Sub(time.UnixMilli(issued)) > iteratorLife {
		s.mu.Unlock()
		writeError(w, "ExpiredIteratorException", "Iterator expired")
		return true
	}
	if !allow(&sh.calls, s.cfg.GetRecordsPerShard, wall) {
		s.stats.Throttled++
		s.mu.Unlock()
		writeError(w, "LimitExceededException", "GetRecords: rate exceeded for shard "+sh.id)
		return true
	}
	now := s.now()
	s.advance(st, now)
	avail := s.available(sh, now)
	closed := sh.children != nil
	s.mu.Unlock()

	// Rendering needs no lock: a shard's records are a function of fields fixed at its creation.
	b := append(make([]byte, 0, 64<<10), `{"Records":[`...)
	next, bytesIn := j, 0
	for next < avail && int(next-j) < limit && bytesIn < pageBytes {
		if next > j {
			b = append(b, ',')
		}
		var n int
		b, n = s.appendRecord(b, st, sh, next)
		bytesIn += n
		next++
	}
	b = append(b, ']')
	if !(closed && next >= sh.total) {
		b = append(b, `,"NextShardIterator":"`...)
		b = append(b, s.iterator(st, sh, next, wall)...)
		b = append(b, '"')
	}
	b = append(b, '}')

	s.mu.Lock()
	s.stats.Records += int64(next - j)
	sh.read = max(sh.read, next)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
	return true
}
