package ddbavro

import (
	"errors"
	"testing"
)

// FuzzDecodeHostileBytes: arbitrary bytes given to the decoders return an error or an event, and
// never panic, hang or allocate without bound.
func FuzzDecodeHostileBytes(f *testing.F) {
	m := NewModel("orders")
	for _, ev := range randomEvents(7, 8) {
		if _, err := m.EvolveFor(ev); err != nil {
			f.Fatal(err)
		}
	}
	for _, ev := range randomEvents(7, 8) {
		typed, err := m.AppendTyped(nil, ev)
		if err != nil {
			f.Fatal(err)
		}
		doc, err := AppendDocument(nil, ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(typed)
		f.Add(doc)
	}
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := m.ReadTyped(data); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("typed decode error does not wrap ErrMalformed: %v", err)
		}
		_, _ = ReadDocument(data)
		_, _ = ReadKey(data)
	})
}
