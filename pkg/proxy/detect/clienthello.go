package detect

import (
	"encoding/binary"
	"errors"
)

var (
	errShort        = errors.New("need more bytes")
	errNotHandshake = errors.New("not a TLS handshake record")
	errMalformed    = errors.New("malformed ClientHello")
)

type clientHello struct {
	sni  string
	alpn []string
}

// parseClientHello extracts SNI and ALPN from a TLS ClientHello (RFC 8446
// 4.1.2), reassembling a handshake message split over several records.
func parseClientHello(b []byte) (clientHello, error) {
	// Reassemble the handshake payload from records.
	var msg []byte
	need := -1
	for {
		if len(b) >= 2 && b[0] == 0x16 && b[1] != 3 {
			return clientHello{}, errNotHandshake
		}
		if len(b) < 5 {
			return clientHello{}, errShort
		}
		if b[0] != 0x16 {
			if msg == nil {
				return clientHello{}, errNotHandshake
			}
			return clientHello{}, errMalformed
		}
		if b[1] != 3 {
			return clientHello{}, errNotHandshake
		}
		n := int(binary.BigEndian.Uint16(b[3:5]))
		if n == 0 || n > 1<<14+2048 {
			return clientHello{}, errMalformed
		}
		if len(b) < 5+n {
			// Parse what we have only once the header is complete.
			if msg == nil && len(b) >= 9 && b[5] != 1 {
				return clientHello{}, errMalformed
			}
			return clientHello{}, errShort
		}
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
		if need < 0 && len(msg) >= 4 {
			if msg[0] != 1 {
				return clientHello{}, errMalformed
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need > MaxPeek {
				return clientHello{}, errMalformed
			}
		}
		if need >= 0 && len(msg) >= need {
			return parseHelloBody(msg[4:need])
		}
	}
}

// reader is a bounds-checked cursor over a byte slice.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func parseHelloBody(body []byte) (clientHello, error) {
	r := &reader{b: body}
	r.take(2)       // legacy_version
	r.take(32)      // random
	r.take(r.u8())  // session id
	r.take(r.u16()) // cipher suites
	r.take(r.u8())  // compression methods
	if r.bad {
		return clientHello{}, errMalformed
	}
	var h clientHello
	if len(r.b) == 0 {
		return h, nil // no extensions
	}
	exts := &reader{b: r.take(r.u16())}
	if r.bad {
		return clientHello{}, errMalformed
	}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := &reader{b: exts.take(exts.u16())}
		if exts.bad {
			return clientHello{}, errMalformed
		}
		switch typ {
		case 0: // server_name
			list := &reader{b: data.take(data.u16())}
			for len(list.b) > 0 && !list.bad {
				kind := list.u8()
				name := list.take(list.u16())
				if kind == 0 && !list.bad && h.sni == "" {
					h.sni = string(name)
				}
			}
			if list.bad || data.bad {
				return clientHello{}, errMalformed
			}
		case 16: // application_layer_protocol_negotiation
			list := &reader{b: data.take(data.u16())}
			for len(list.b) > 0 && !list.bad {
				p := list.take(list.u8())
				if !list.bad && len(p) > 0 {
					h.alpn = append(h.alpn, string(p))
				}
			}
			if list.bad || data.bad {
				return clientHello{}, errMalformed
			}
		}
	}
	return h, nil
}
