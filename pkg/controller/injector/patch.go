package injector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// op is one RFC 6902 operation.
type op struct {
	Op    string
	Path  string
	Value any
}

// MarshalJSON writes the value for every op but remove (a null value is a
// value).
func (o op) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{o.Op, o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// jsonPatch returns the RFC 6902 patch that turns the JSON document from into
// to. Objects are compared key by key; arrays with a contiguous run of
// inserted (or removed) elements become adds (or removes) at those indexes;
// any other array change replaces the array.
func jsonPatch(from, to []byte) ([]byte, error) {
	a, err := decodeJSON(from)
	if err != nil {
		return nil, fmt.Errorf("decoding the original object: %w", err)
	}
	b, err := decodeJSON(to)
	if err != nil {
		return nil, fmt.Errorf("decoding the injected object: %w", err)
	}
	ops := []op{}
	diff("", a, b, &ops)
	return json.Marshal(ops)
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func diff(path string, a, b any, ops *[]op) {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		for _, k := range sortedKeys(av) {
			if _, ok := bv[k]; !ok {
				*ops = append(*ops, op{Op: "remove", Path: path + "/" + escape(k)})
			}
		}
		for _, k := range sortedKeys(bv) {
			p := path + "/" + escape(k)
			if old, ok := av[k]; ok {
				diff(p, old, bv[k], ops)
			} else {
				*ops = append(*ops, op{Op: "add", Path: p, Value: bv[k]})
			}
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok {
			break
		}
		if len(av) == len(bv) {
			for i := range av {
				diff(path+"/"+strconv.Itoa(i), av[i], bv[i], ops)
			}
			return
		}
		if arrayOps(path, av, bv, ops) {
			return
		}
	default:
		if reflect.DeepEqual(a, b) {
			return
		}
	}
	if !reflect.DeepEqual(a, b) {
		*ops = append(*ops, op{Op: "replace", Path: path, Value: b})
	}
}

// arrayOps handles b = a with one contiguous run inserted, or removed.
func arrayOps(path string, a, b []any, ops *[]op) bool {
	short, long := a, b
	if len(a) > len(b) {
		short, long = b, a
	}
	pre := 0
	for pre < len(short) && reflect.DeepEqual(short[pre], long[pre]) {
		pre++
	}
	suf := 0
	for suf < len(short)-pre && reflect.DeepEqual(short[len(short)-1-suf], long[len(long)-1-suf]) {
		suf++
	}
	if pre+suf != len(short) {
		return false
	}
	n := len(long) - len(short)
	for i := 0; i < n; i++ {
		if len(b) > len(a) {
			*ops = append(*ops, op{Op: "add", Path: path + "/" + strconv.Itoa(pre+i), Value: long[pre+i]})
		} else {
			*ops = append(*ops, op{Op: "remove", Path: path + "/" + strconv.Itoa(pre)})
		}
	}
	return true
}

// escape makes a JSON Pointer reference token (RFC 6901).
func escape(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
