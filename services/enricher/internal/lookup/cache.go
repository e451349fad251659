package lookup

import (
	"container/list"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// cache is a bounded LRU of lookup answers, each valid until its own expiry: found items live
// for the TTL, misses for the (usually shorter) negative TTL. Not safe for concurrent use.
type cache struct {
	max     int
	entries map[string]*list.Element
	order   *list.List // front: most recently used
}

type entry struct {
	key     string
	item    map[string]types.AttributeValue // nil: the key was missing
	expires time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, entries: map[string]*list.Element{}, order: list.New()}
}

// get returns the cached answer for key (found reports whether the item exists) and whether
// there was a fresh one.
func (c *cache) get(key string, now time.Time) (item map[string]types.AttributeValue, found, fresh bool) {
	el, ok := c.entries[key]
	if !ok {
		return nil, false, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.entries, key)
		return nil, false, false
	}
	c.order.MoveToFront(el)
	return e.item, e.item != nil, true
}

// put stores an answer (item nil: missing) until now+ttl, evicting the least recently used
// entries beyond the bound.
func (c *cache) put(key string, item map[string]types.AttributeValue, now time.Time, ttl time.Duration) {
	if c.max <= 0 || ttl <= 0 {
		return
	}
	if el, ok := c.entries[key]; ok {
		e := el.Value.(*entry)
		e.item, e.expires = item, now.Add(ttl)
		c.order.MoveToFront(el)
		return
	}
	c.entries[key] = c.order.PushFront(&entry{key: key, item: item, expires: now.Add(ttl)})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*entry).key)
	}
}

func (c *cache) len() int { return c.order.Len() }
