package grpcwire

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field is one decoded protobuf field: Varint holds varint and fixed values,
// Bytes holds length-delimited ones (strings, bytes, embedded messages,
// packed repeated fields).
type Field struct {
	Num    protowire.Number
	Type   protowire.Type
	Varint uint64
	Bytes  []byte
}

// RangeFields calls fn for every field of the protobuf message b, in wire
// order. Unknown fields are the caller's to skip; groups are rejected.
// Malformed input is an error, never a panic.
func RangeFields(b []byte, fn func(Field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("malformed protobuf tag: %w", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			// protobuf-go refuses these too (its decoder checks the range
			// ConsumeTag leaves to the caller).
			return fmt.Errorf("malformed protobuf tag: field number %d over %d", num, protowire.MaxValidNumber)
		}
		b = b[n:]
		f := Field{Num: num, Type: typ}
		switch typ {
		case protowire.VarintType:
			f.Varint, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.Varint = uint64(v)
		case protowire.Fixed64Type:
			f.Varint, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.Bytes, n = protowire.ConsumeBytes(b)
		default:
			return fmt.Errorf("unsupported protobuf wire type %d in field %d", typ, num)
		}
		if n < 0 {
			return fmt.Errorf("malformed protobuf field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// StringMapEntry decodes one entry of a map<string, string> field.
func StringMapEntry(b []byte) (key, value string, err error) {
	err = RangeFields(b, func(f Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			key = string(f.Bytes)
		case 2:
			value = string(f.Bytes)
		}
		return nil
	})
	return key, value, err
}
