package streamsource

import (
	"encoding/base64"
	"strconv"
	"time"
)

// The records are rendered straight into the GetRecords response's JSON: at 100,000 records per
// second a reflective encoder would use more CPU than the producer it feeds.

// change is what record j of a shard does to which item.
type change struct {
	item    int    // index of the item in its key space
	version uint64 // the item's version after the change (before it, for a remove)
	event   string // INSERT, MODIFY or REMOVE
}

// changeOf maps a lineage index to its change: the records walk the key space slot by slot, so
// item = perm(i mod keys) is at version i / keys; every DeleteEvery-th version is a REMOVE and the
// one after it an INSERT.
func (s *Source) changeOf(l *lineage, i uint64) change {
	slot := int(i % uint64(l.keys))
	c := change{item: int((uint64(slot) * uint64(l.step)) % uint64(l.keys)), version: i / uint64(l.keys), event: "MODIFY"}
	d := uint64(s.cfg.DeleteEvery)
	switch {
	case c.version == 0:
		c.event = "INSERT"
	case d > 1 && c.version%d == d-1:
		c.event = "REMOVE"
	case d > 1 && c.version%d == 0:
		c.event = "INSERT"
	}
	return c
}

// rng is splitmix64: each item version's attribute values come from a generator seeded by the
// item and the version, so an old image is the same bytes as the new image one version earlier.
type rng uint64

func (r *rng) next() uint64 {
	*r += 0x9e3779b97f4a7c15
	z := uint64(*r)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

var (
	statuses = []string{"new", "paid", "packed", "shipped", "delivered", "returned", "cancelled", "refunded"}
	cities   = []string{"Berlin", "Lisbon", "Osaka", "Austin", "Nairobi", "Lima", "Oslo", "Pune"}
	regions  = []string{"eu-north", "eu-south", "ap-east", "us-south", "af-east", "sa-west", "eu-west", "ap-south"}
	colors   = []string{"red", "green", "blue", "black", "white", "amber"}
	// filler is the pool the note attribute is cut from.
	filler = func() string {
		const words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua "
		b := make([]byte, 0, 8192)
		for len(b) < 8192 {
			b = append(b, words...)
		}
		return string(b)
	}()
)

// Region is the region attribute of an item: fixed per item, so a filter on it suits a mirror.
func Region(item int) string { return regions[item%len(regions)] }

// appendKeys appends the key attributes of an item as a map: id (S, the partition key) and line
// (N, the sort key).
func appendKeys(b []byte, l *lineage, item int) []byte {
	return append(appendKeyAttrs(append(b, '{'), l, item), '}')
}

// appendKeyAttrs appends the key attributes' members, without braces.
func appendKeyAttrs(b []byte, l *lineage, item int) []byte {
	b = append(b, `"id":{"S":"`...)
	b = append(b, l.name...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(item), 10)
	b = append(b, `"},"line":{"N":"`...)
	b = strconv.AppendInt(b, int64(item%7+1), 10)
	return append(b, `"}`...)
}

// appendImage appends an item image of about 500 bytes with every DynamoDB attribute type: S, N
// (integers, decimals, small and large), B, BOOL, NULL (one item in 16), SS, NS, BS, L and nested
// M.
func (s *Source) appendImage(b []byte, l *lineage, item int, version uint64, written time.Time) []byte {
	r := rng(uint64(l.id)<<48 ^ uint64(item)<<20 ^ version)
	// One item in 16 carries the values few tables have: a NULL attribute and a number no
	// decimal(38,18) holds. Item 0, every key space's first record, is one of them, so every
	// attribute and kind of value appears in the first event.
	rare := item%16 == 0
	b = appendKeyAttrs(append(b, '{'), l, item)
	b = append(b, `,"written_ms":{"N":"`...)
	b = strconv.AppendInt(b, written.UnixMilli(), 10)
	b = append(b, `"},"version":{"N":"`...)
	b = strconv.AppendUint(b, version, 10)
	b = append(b, `"},"region":{"S":"`...)
	b = append(b, Region(item)...)
	b = append(b, `"},"status":{"S":"`...)
	b = append(b, statuses[r.intn(len(statuses))]...)
	b = append(b, `"},"customer":{"S":"c-`...)
	b = strconv.AppendInt(b, int64(r.intn(100000)), 10)
	b = append(b, `"},"amount":{"N":"`...)
	cents := r.intn(10000000)
	b = strconv.AppendInt(b, int64(cents/100), 10)
	b = append(b, '.')
	b = append(b, byte('0'+cents/10%10), byte('0'+cents%10))
	b = append(b, `"},"qty":{"N":"`...)
	b = strconv.AppendInt(b, int64(r.intn(500)+1), 10)
	b = append(b, `"},"score":{"N":"0.`...)
	b = strconv.AppendInt(b, int64(r.intn(1000000000)), 10)
	b = append(b, `"},"big":{"N":"`...)
	b = strconv.AppendUint(b, r.next()%1e18, 10) // past int64 and float64 precision
	if rare {
		b = strconv.AppendUint(b, r.next()%1e18, 10) // 30-odd digits: past decimal(38,18) too
	} else {
		b = append(b, '.')
		b = strconv.AppendUint(b, 100000+r.next()%900000, 10)
	}
	b = append(b, `"},"active":{"BOOL":`...)
	b = strconv.AppendBool(b, r.next()&1 == 0)
	if rare {
		b = append(b, `},"gone":{"NULL":true`...)
	}
	b = append(b, `},"tags":{"SS":["`...)
	first := r.intn(len(colors))
	b = append(b, colors[first]...)
	b = append(b, `","`...)
	b = append(b, colors[(first+1+r.intn(len(colors)-1))%len(colors)]...)
	b = append(b, `"]},"sizes":{"NS":["`...)
	b = strconv.AppendInt(b, int64(r.intn(50)), 10)
	b = append(b, `","`...)
	b = strconv.AppendInt(b, int64(50+r.intn(50)), 10)
	b = append(b, `.5"]},"blob":{"B":"`...)
	var raw [12]byte
	for i := range raw {
		raw[i] = byte(r.next())
	}
	b = base64.StdEncoding.AppendEncode(b, raw[:])
	b = append(b, `"},"blobs":{"BS":["`...)
	b = base64.StdEncoding.AppendEncode(b, raw[:4])
	b = append(b, `","`...)
	b = base64.StdEncoding.AppendEncode(b, raw[4:9])
	b = append(b, `"]},"note":{"S":"`...)
	at := r.intn(len(filler) - s.cfg.NoteBytes)
	b = append(b, filler[at:at+s.cfg.NoteBytes]...)
	b = append(b, `"},"history":{"L":[{"N":"`...)
	b = strconv.AppendUint(b, version, 10)
	b = append(b, `"},{"S":"`...)
	b = append(b, statuses[r.intn(len(statuses))]...)
	b = append(b, `"},{"BOOL":false}]},"address":{"M":{"city":{"S":"`...)
	b = append(b, cities[r.intn(len(cities))]...)
	b = append(b, `"},"zip":{"S":"`...)
	b = strconv.AppendInt(b, int64(10000+r.intn(90000)), 10)
	b = append(b, `"},"geo":{"L":[{"N":"`...)
	b = strconv.AppendInt(b, int64(r.intn(180)-90), 10)
	b = append(b, `.25"},{"N":"`...)
	b = strconv.AppendInt(b, int64(r.intn(360)-180), 10)
	return append(b, `.5"}]}}}}`...)
}

// sequence is a record's sequence number: 21 digits, increasing along a key space, unique in the
// stream.
func sequence(b []byte, l *lineage, i uint64) []byte {
	var digits [21]byte
	n := uint64(l.id)*1e14 + i
	for k := len(digits) - 1; k >= 0; k-- {
		digits[k] = byte('0' + n%10)
		n /= 10
	}
	return append(b, digits[:]...)
}

// parseSequence inverts sequence: the key space and lineage index.
func parseSequence(seq string) (lineageID int, i uint64, ok bool) {
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return int(n / 1e14), n % 1e14, true
}

// appendRecord appends record j of a shard as a Streams record, and returns the item bytes it
// counts against the 1 MB page limit.
func (s *Source) appendRecord(b []byte, st *stream, sh *shard, j uint64) ([]byte, int) {
	i := sh.start + j
	c := s.changeOf(sh.lin, i)
	at := s.createdAt(sh, j)
	mark := len(b)
	b = append(b, `{"awsRegion":"`...)
	b = append(b, s.cfg.Region...)
	b = append(b, `","dynamodb":{"ApproximateCreationDateTime":`...)
	b = strconv.AppendFloat(b, float64(at.UnixMilli())/1000, 'f', 3, 64)
	b = append(b, `,"Keys":`...)
	b = appendKeys(b, sh.lin, c.item)
	images := len(b)
	if c.event != "REMOVE" {
		b = append(b, `,"NewImage":`...)
		b = s.appendImage(b, sh.lin, c.item, c.version, at)
	}
	if c.event != "INSERT" {
		// The version before this one was written one pass over the key space earlier.
		before := at.Add(-time.Duration(float64(sh.lin.keys) / sh.rate * float64(time.Second)))
		b = append(b, `,"OldImage":`...)
		b = s.appendImage(b, sh.lin, c.item, c.version-1, before)
	}
	size := len(b) - images
	b = append(b, `,"SequenceNumber":"`...)
	b = sequence(b, sh.lin, i)
	b = append(b, `","SizeBytes":`...)
	b = strconv.AppendInt(b, int64(size), 10)
	b = append(b, `,"StreamViewType":"NEW_AND_OLD_IMAGES"},"eventID":"`...)
	b = strconv.AppendUint(b, uint64(sh.lin.id), 36)
	b = append(b, '-')
	b = strconv.AppendUint(b, i, 36)
	b = append(b, `","eventName":"`...)
	b = append(b, c.event...)
	b = append(b, `","eventSource":"aws:dynamodb","eventVersion":"1.1"}`...)
	return b, len(b) - mark
}
