package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
)

// chunkedSeeds are chunked bodies, well-formed and not: extensions,
// trailers, size tricks (0x prefix, overflow, leading zeros, spaces), bare
// CR, missing CRLF after the data, and a following message. More seeds,
// the inputs the fuzzer found, are in testdata/fuzz/FuzzCopyChunked and
// testdata/fuzz/FuzzParseChunkSize.
var chunkedSeeds = []string{
	"0\r\n\r\n",
	"5\r\nhello\r\n0\r\n\r\n",
	"5;ext=1;q=\"a b\"\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
	"A\r\n0123456789\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
	"000005\r\nhello\r\n0000\r\n\r\n",
	"0x5\r\nhello\r\n0\r\n\r\n",
	"5 \r\nhello\r\n0\r\n\r\n",
	"5\rhello\r\n0\r\n\r\n",
	"5\r\nhelloXX0\r\n\r\n",
	"ffffffffffffffff\r\n",
	"7fffffffffffffff\r\nx",
	"0\r\nX: a\r\n b\r\n\r\n",
	"2;\x00\r\nab\r\n0\r\n\r\n",
}

// FuzzCopyChunked feeds arbitrary bytes to copyChunked, the fast path's
// relay of chunked bodies (responses), and checks that
//   - it never panics, and never writes a byte it did not read, in order:
//     what it wrote is always a prefix of its input;
//   - when it accepts a body, it stopped exactly where a conforming HTTP/1.1
//     parser (net/http's) says the message ends, with the same data: what
//     it forwarded frames the same for the proxy and for the peer behind it.
//     A body net/http refuses must be refused too (no smuggling room).
func FuzzCopyChunked(f *testing.F) {
	for _, s := range chunkedSeeds {
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, in []byte, bufSize uint8) {
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, 16)
		r := bufio.NewReaderSize(bytes.NewReader(in), fastBufSize)
		written, err := copyChunked(w, r, make([]byte, int(bufSize)%64+1))
		if ferr := w.Flush(); ferr != nil {
			t.Fatal(ferr)
		}
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("wrote %q, which is not a prefix of the input %q", out.Bytes(), in)
		}
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(r)
		if out.Len()+len(rest) != len(in) {
			t.Fatalf("wrote %d bytes and left %d of %d", out.Len(), len(rest), len(in))
		}
		// The same bytes as a response body, followed by a second response,
		// through net/http.
		const next = "HTTP/1.1 204 No Content\r\n\r\n"
		stream := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + out.String() + next
		br := bufio.NewReader(bytes.NewReader([]byte(stream)))
		resp, gerr := http.ReadResponse(br, nil)
		if gerr != nil {
			t.Fatalf("net/http cannot read the response head: %v", gerr)
		}
		data, gerr := io.ReadAll(resp.Body)
		if gerr != nil {
			t.Fatalf("copyChunked accepted %q (%d data bytes), net/http refuses it: %v", out.Bytes(), written, gerr)
		}
		if int64(len(data)) != written {
			t.Fatalf("copyChunked counted %d data bytes in %q, net/http reads %d", written, out.Bytes(), len(data))
		}
		second, gerr := http.ReadResponse(br, nil)
		if gerr != nil || second.StatusCode != http.StatusNoContent {
			t.Fatalf("after the body %q net/http does not find the next response: %v", out.Bytes(), gerr)
		}
	})
}

// FuzzParseChunkSize checks the chunk-size parser against RFC 9112's
// grammar: 1*HEXDIG (at most 15 digits, so the size fits an int64 with
// room), optionally followed by BWS, a chunk extension or the line end.
// Signs, prefixes and anything else in the size are refused.
func FuzzParseChunkSize(f *testing.F) {
	for _, s := range chunkedSeeds {
		line, _, _ := bytes.Cut([]byte(s), []byte("\n"))
		f.Add(append(line, '\n'))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		n, err := parseChunkSize(line)
		digits := 0
		for digits < len(line) && isHexDigit(line[digits]) {
			digits++
		}
		if err != nil {
			return
		}
		if digits == 0 || digits > 15 {
			t.Fatalf("parseChunkSize(%q) = %d, want an error: the size is not 1 to 15 hex digits", line, n)
		}
		if end := line[digits:]; len(end) > 0 && !bytes.ContainsAny(end[:1], ";\r\n \t") {
			t.Fatalf("parseChunkSize(%q) = %d, want an error: %q follows the size", line, n, end[:1])
		}
		want, perr := strconv.ParseUint(string(line[:digits]), 16, 64)
		if perr != nil || int64(want) != n {
			t.Fatalf("parseChunkSize(%q) = %d, want %d (%v)", line, n, want, perr)
		}
	})
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
