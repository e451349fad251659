package streams

// A small JSON scanner for the GetRecords decoder (fastrecords.go): it walks one document in
// place, handing strings out as slices of the input when they hold no escapes.

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonScanner reads one JSON document.
type jsonScanner struct {
	b []byte
	i int
}

var errSyntax = errors.New("malformed JSON")

func (s *jsonScanner) fail(what string) error {
	return fmt.Errorf("%w at byte %d: %s", errSyntax, s.i, what)
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space (0 at the end).
func (s *jsonScanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *jsonScanner) expect(c byte) error {
	if s.peek() != c {
		return s.fail("expected " + string(c))
	}
	s.i++
	return nil
}

// null consumes a null if one is next.
func (s *jsonScanner) null() bool { return s.literal("null") }

// object calls member for each member of an object; member must consume the value.
func (s *jsonScanner) object(member func(key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		key, err := s.rawString()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.fail("expected , or }")
		}
	}
}

// array calls elem for each element of an array; elem must consume the value.
func (s *jsonScanner) array(elem func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.fail("expected , or ]")
		}
	}
}

// rawString returns a string's bytes (unescaped; aliasing the input when it has no escapes).
func (s *jsonScanner) rawString() ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return nil, err
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], nil
		case c == '\\':
			return s.escaped(start)
		case c < 0x20:
			return nil, s.fail("control character in a string")
		}
		s.i++
	}
	return nil, s.fail("unterminated string")
}

// escaped continues a string from its first backslash, into a new buffer.
func (s *jsonScanner) escaped(start int) ([]byte, error) {
	out := append([]byte(nil), s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return out, nil
		case c < 0x20:
			return nil, s.fail("control character in a string")
		case c != '\\':
			out = append(out, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return nil, s.fail("unterminated escape")
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return nil, s.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					s.i += 2
					low, ok := s.hex4()
					if !ok {
						return nil, s.fail("bad \\u escape")
					}
					if r2 = utf16.DecodeRune(r, low); r2 == utf8.RuneError {
						// Not a pair: the first is replaced, the second stands on its own.
						out = utf8.AppendRune(out, utf8.RuneError)
						r = low
						if utf16.IsSurrogate(r) {
							r = utf8.RuneError
						}
						out = utf8.AppendRune(out, r)
						continue
					}
				}
				out = utf8.AppendRune(out, r2)
				continue
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, s.fail("bad escape")
		}
	}
	return nil, s.fail("unterminated string")
}

func (s *jsonScanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(s.b[s.i:s.i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	s.i += 4
	return rune(v), true
}

func (s *jsonScanner) str() (string, error) {
	b, err := s.rawString()
	return string(b), err
}

// optString reads a string or null.
func (s *jsonScanner) optString() (*string, error) {
	if s.null() {
		return nil, nil
	}
	v, err := s.str()
	return &v, err
}

// number returns a number's text.
func (s *jsonScanner) number() (string, error) {
	s.ws()
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			s.i++
			continue
		}
		break
	}
	if start == s.i {
		return "", s.fail("expected a number")
	}
	return string(s.b[start:s.i]), nil
}

// literal consumes word if it is next.
func (s *jsonScanner) literal(word string) bool {
	s.ws()
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

func (s *jsonScanner) boolean() (bool, error) {
	switch {
	case s.literal("true"):
		return true, nil
	case s.literal("false"):
		return false, nil
	}
	return false, s.fail("expected true or false")
}

// skip consumes any value, returning its bytes.
func (s *jsonScanner) skip() ([]byte, error) {
	s.ws()
	start := s.i
	var err error
	switch s.peek() {
	case '{':
		err = s.object(func([]byte) error { _, err := s.skip(); return err })
	case '[':
		err = s.array(func() error { _, err := s.skip(); return err })
	case '"':
		_, err = s.rawString()
	case 't', 'f':
		_, err = s.boolean()
	case 'n':
		if !s.null() {
			err = s.fail("expected null")
		}
	default:
		_, err = s.number()
	}
	return s.b[start:s.i], err
}
