package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

// createTable creates a table with streams (new and old images) and waits until it is active.
func createTable(ctx context.Context, ddb *dynamodb.Client, name, hash string, rangeKey string) (string, error) {
	in := &dynamodb.CreateTableInput{TableName: aws.String(name), BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(hash), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(hash), KeyType: types.KeyTypeHash}},
		StreamSpecification:  &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages}}
	if rangeKey != "" {
		in.AttributeDefinitions = append(in.AttributeDefinitions, types.AttributeDefinition{AttributeName: aws.String(rangeKey), AttributeType: types.ScalarAttributeTypeN})
		in.KeySchema = append(in.KeySchema, types.KeySchemaElement{AttributeName: aws.String(rangeKey), KeyType: types.KeyTypeRange})
	}
	out, err := ddb.CreateTable(ctx, in)
	if err != nil {
		return "", fmt.Errorf("creating table %s: %w", name, err)
	}
	return aws.ToString(out.TableDescription.LatestStreamArn), nil
}

// workload writes customers, then orders: inserts, updates, deletes, transactions and batch
// writes, with items of every attribute type; new attributes appear halfway through. Each write
// puts the time it was sent into the item (written_ms), for the latency measurement.
type workload struct {
	ddb       *dynamodb.Client
	orders    string
	customers string
	rate      int // operations per second, shared by the writers
	writers   int // concurrent writers, each with its own orders
	customerN int
	seed      uint64

	// gate: writers hold it shared for each operation; pause holds it alone.
	gate sync.RWMutex

	start, end time.Time      // of the orders' writes
	ops        map[string]int // operations done, by kind
	live       int            // orders that exist at the end
}

// writer is one of the workload's concurrent writers: its orders are its own, so its updates and
// deletes always find them.
type writer struct {
	*workload
	name string
	r    *rand.Rand
	live []orderKey
	next int
	ops  map[string]int
}

type orderKey struct {
	id   string
	line int
}

func (k orderKey) key() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"order_id": s(k.id), "line": n(strconv.Itoa(k.line))}
}

var notes = []string{"café ☕", "東京 → 大阪", "emoji 🚀🔥", "", "naïve façade", "ελληνικά", "a\"quoted\" \\ slash", "tab\tnewline\n"}

// customerID returns the customer of an order: mostly real ones, sometimes one that does not
// exist (the enricher's inner join drops those orders).
func (w *writer) customerID() string {
	if w.r.IntN(10) == 0 {
		return "ghost-" + strconv.Itoa(w.r.IntN(3))
	}
	return fmt.Sprintf("cust-%02d", w.r.IntN(w.customerN))
}

func (w *writer) amount() string {
	switch w.r.IntN(5) {
	case 0:
		return "12345678901234567890.123456789012345678" // 38 significant digits
	case 1:
		return strconv.Itoa(w.r.IntN(100000))
	case 2:
		return "-0.000000000000000001"
	case 3:
		return "99999999999999999999999999999999999999" // 38 nines, an integer beyond int64
	}
	return fmt.Sprintf("%d.%02d", w.r.IntN(1000), w.r.IntN(100))
}

// orderItem is a full order line with every DynamoDB type.
func (w *writer) orderItem(k orderKey, late bool) map[string]types.AttributeValue {
	blob := make([]byte, 1+w.r.IntN(24))
	for i := range blob {
		blob[i] = byte(w.r.IntN(256))
	}
	item := map[string]types.AttributeValue{
		"order_id": s(k.id), "line": n(strconv.Itoa(k.line)),
		"customer_id": s(w.customerID()),
		"status":      s([]string{"placed", "paid", "shipped"}[w.r.IntN(3)]),
		"amount":      n(w.amount()),
		"qty":         n(strconv.Itoa(1 + w.r.IntN(20))),
		"note":        s(notes[w.r.IntN(len(notes))]),
		"tags":        &types.AttributeValueMemberSS{Value: []string{"t" + strconv.Itoa(w.r.IntN(5)), "ünï-" + strconv.Itoa(w.r.IntN(5)) + "x"}},
		"sizes":       &types.AttributeValueMemberNS{Value: []string{"1", "2.5", "12345678901234567890123456789012345678"}},
		"blobs":       &types.AttributeValueMemberBS{Value: [][]byte{blob, {0, 1, 2}}},
		"payload":     &types.AttributeValueMemberB{Value: blob},
		"gift":        &types.AttributeValueMemberBOOL{Value: w.r.IntN(2) == 0},
		"nothing":     &types.AttributeValueMemberNULL{Value: true},
		"address": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
			"city": s([]string{"Lyon", "Zürich", "São Paulo"}[w.r.IntN(3)]), "zip": s(strconv.Itoa(10000 + w.r.IntN(90000))),
			"geo":   &types.AttributeValueMemberL{Value: []types.AttributeValue{n("45.764"), n("4.8357")}},
			"inner": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"floor": n(strconv.Itoa(w.r.IntN(9))), "ok": &types.AttributeValueMemberBOOL{Value: true}}},
		}},
		// No empty map ({"M": {}}): DynamoDB Local 3.3.1's stream renders one as {} (no type),
		// which the Go SDK decodes as the value of the attribute decoded before it. The sink's
		// tests write empty maps through both encodings instead.
		"history": &types.AttributeValueMemberL{Value: []types.AttributeValue{
			&types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"at": n(strconv.FormatInt(time.Now().UnixMilli(), 10)), "what": s("created")}},
			s("free text"), n("7"),
		}},
		"written_ms": n(strconv.FormatInt(time.Now().UnixMilli(), 10)),
	}
	if late { // attributes that appear halfway through the run: new columns downstream
		item["discount"] = n("0.15")
		item["coupon"] = s("WELCOME-" + strconv.Itoa(w.r.IntN(100)))
	}
	return item
}

// writeCustomers writes the customers the enricher joins orders with.
func (w *workload) writeCustomers(ctx context.Context) error {
	for i := range w.customerN {
		id := fmt.Sprintf("cust-%02d", i)
		if _, err := w.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(w.customers), Item: map[string]types.AttributeValue{
			"customer_id": s(id), "name": s([]string{"Ada Lovelace", "Émile Zola", "李小龍", "Grace Hopper"}[i%4] + " " + strconv.Itoa(i)),
			"tier": s([]string{"gold", "silver", "bronze"}[i%3]), "since": n(strconv.Itoa(2000 + i)),
		}}); err != nil {
			return fmt.Errorf("writing customer %s: %w", id, err)
		}
	}
	return nil
}

// run writes orders at the configured rate for d, and after that until until is closed.
func (w *workload) run(ctx context.Context, d time.Duration, until <-chan struct{}) error {
	w.start = time.Now()
	w.ops = map[string]int{}
	tokens := make(chan bool) // one per operation; true once the new attributes are on
	stop := make(chan struct{})
	go func() {
		defer close(tokens)
		tick := time.NewTicker(time.Second / time.Duration(w.rate))
		defer tick.Stop()
		for {
			if time.Since(w.start) >= d {
				select {
				case <-until:
					return
				default:
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-tick.C:
			}
			select {
			case tokens <- time.Since(w.start) > d/2:
			case <-ctx.Done():
				return
			case <-stop:
				return
			}
		}
	}()
	errs := make(chan error, w.writers)
	writers := make([]*writer, w.writers)
	for i := range writers {
		wr := &writer{workload: w, name: fmt.Sprintf("w%d", i), r: rand.New(rand.NewPCG(w.seed, uint64(i))), ops: map[string]int{}}
		writers[i] = wr
		go func() {
			for late := range tokens {
				w.gate.RLock()
				err := wr.step(ctx, late)
				w.gate.RUnlock()
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range writers {
		if err := <-errs; err != nil && first == nil {
			first = err
			close(stop)
		}
	}
	w.end = time.Now()
	for _, wr := range writers {
		for k, v := range wr.ops {
			w.ops[k] += v
		}
		w.live += len(wr.live)
	}
	return first
}

// pause stops the writers after their current operation, until the returned func is called.
func (w *workload) pause() (resume func()) {
	w.gate.Lock()
	return w.gate.Unlock
}

func (w *writer) newKey() orderKey {
	w.next++
	return orderKey{id: fmt.Sprintf("order-%s-%05d", w.name, w.next), line: 1 + w.r.IntN(3)}
}

// step does one operation; late adds the attributes that appear halfway through the run.
func (w *writer) step(ctx context.Context, late bool) error {
	var err error
	op := w.r.IntN(10)
	if len(w.live) < 5 {
		op = 0
	}
	switch {
	case op < 4: // insert
		k := w.newKey()
		_, err = w.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(w.orders), Item: w.orderItem(k, late)})
		if err == nil {
			w.live = append(w.live, k)
		}
		w.ops["insert"]++
	case op < 7: // update: set, add a new attribute later in the run, remove one
		k := w.live[w.r.IntN(len(w.live))]
		expr := "SET #s = :s, amount = :a, written_ms = :w REMOVE tags"
		values := map[string]types.AttributeValue{":s": s([]string{"paid", "shipped", "delivered", "refunded"}[w.r.IntN(4)]),
			":a": n(w.amount()), ":w": n(strconv.FormatInt(time.Now().UnixMilli(), 10))}
		if late {
			expr = "SET #s = :s, amount = :a, written_ms = :w, rating = :r REMOVE tags"
			values[":r"] = n(strconv.Itoa(1 + w.r.IntN(5)))
		}
		_, err = w.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(w.orders), Key: k.key(),
			UpdateExpression: aws.String(expr), ExpressionAttributeNames: map[string]string{"#s": "status"}, ExpressionAttributeValues: values})
		w.ops["update"]++
	case op < 8: // delete
		i := w.r.IntN(len(w.live))
		_, err = w.ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(w.orders), Key: w.live[i].key()})
		if err == nil {
			w.live = append(w.live[:i], w.live[i+1:]...)
		}
		w.ops["delete"]++
	case op < 9: // a transaction: two new orders and an update, all or nothing
		a, b := w.newKey(), w.newKey()
		upd := w.live[w.r.IntN(len(w.live))]
		_, err = w.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
			{Put: &types.Put{TableName: aws.String(w.orders), Item: w.orderItem(a, late)}},
			{Put: &types.Put{TableName: aws.String(w.orders), Item: w.orderItem(b, late)}},
			{Update: &types.Update{TableName: aws.String(w.orders), Key: upd.key(), UpdateExpression: aws.String("SET qty = qty + :one, written_ms = :w"),
				ExpressionAttributeValues: map[string]types.AttributeValue{":one": n("1"), ":w": n(strconv.FormatInt(time.Now().UnixMilli(), 10))}}},
		}})
		if err == nil {
			w.live = append(w.live, a, b)
		}
		w.ops["transaction"]++
	default: // a batch: three new orders and a delete
		a, b, c := w.newKey(), w.newKey(), w.newKey()
		i := w.r.IntN(len(w.live))
		reqs := []types.WriteRequest{{PutRequest: &types.PutRequest{Item: w.orderItem(a, late)}}, {PutRequest: &types.PutRequest{Item: w.orderItem(b, late)}},
			{PutRequest: &types.PutRequest{Item: w.orderItem(c, late)}}, {DeleteRequest: &types.DeleteRequest{Key: w.live[i].key()}}}
		for len(reqs) > 0 && err == nil {
			var out *dynamodb.BatchWriteItemOutput
			out, err = w.ddb.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{w.orders: reqs}})
			if err == nil {
				reqs = out.UnprocessedItems[w.orders]
			}
		}
		if err == nil {
			w.live = append(append(w.live[:i], w.live[i+1:]...), a, b, c)
		}
		w.ops["batch"]++
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("workload writer %s: %w", w.name, err)
	}
	return nil
}
