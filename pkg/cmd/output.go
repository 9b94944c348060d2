package cmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Every command with a result that is data offers it as -o json and -o
// yaml (the same fields; YAML is the JSON converted, as kubectl does).

// checkOutputFormat is the one line for an -o value the command does not
// offer: the value and the choices.
func checkOutputFormat(o string, allowed ...string) error {
	if slices.Contains(allowed, o) {
		return nil
	}
	return fmt.Errorf("-o %q is not an output format of this command: use %s", o, orList(allowed))
}

// orList is "a", "a or b", "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// structured reports whether o is one of the data formats.
func structured(o string) bool { return o == "json" || o == "yaml" }

// writeStructured writes v as indented JSON or as YAML. It encodes all of v
// before writing, so w gets the whole result or nothing.
func writeStructured(w io.Writer, format string, v any) error {
	b, err := encodeStructured(format, v, true)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// encodeStructured encodes v as JSON (indented, or on one line for
// streams) or as YAML, ending with a newline.
func encodeStructured(format string, v any, indent bool) ([]byte, error) {
	var b []byte
	var err error
	if indent {
		b, err = json.MarshalIndent(v, "", "  ")
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		return nil, fmt.Errorf("encoding the %s output: %w", format, err)
	}
	if format != "yaml" {
		return append(b, '\n'), nil
	}
	if b, err = yaml.JSONToYAML(b); err != nil {
		return nil, fmt.Errorf("encoding the yaml output: %w", err)
	}
	return b, nil
}

// asYAML turns a printer of JSON into a printer of the same as YAML.
func asYAML[T any](printJSON func(io.Writer, T) error) func(io.Writer, T) error {
	return func(w io.Writer, v T) error {
		var buf bytes.Buffer
		if err := printJSON(&buf, v); err != nil {
			return err
		}
		b, err := yaml.JSONToYAML(buf.Bytes())
		if err != nil {
			return fmt.Errorf("encoding the yaml output: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
}
