package destination

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	netv1 "github.com/conduitmesh/conduit/pkg/api/net/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

func tcp(s string) *netv1.TcpAddress { return netv1.FromAddrPort(netip.MustParseAddrPort(s)) }

// TestEncodeGetMatchesGenerated checks the hand-written encoding against the
// generated message.
func TestEncodeGetMatchesGenerated(t *testing.T) {
	var got destinationv1.GetDestination
	if err := proto.Unmarshal(encodeGet("books.demo.svc.cluster.local:8080", `{"ns":"demo"}`), &got); err != nil {
		t.Fatal(err)
	}
	if got.Authority != "books.demo.svc.cluster.local:8080" || got.ContextToken != `{"ns":"demo"}` {
		t.Fatalf("decoded %v", &got)
	}
}

func TestDecodeUpdateMatchesGenerated(t *testing.T) {
	tests := []struct {
		name string
		msg  *destinationv1.Update
		want update
	}{
		{
			name: "add with set and address labels",
			msg: &destinationv1.Update{Update: &destinationv1.Update_Add{Add: &destinationv1.WeightedAddrSet{
				MetricLabels: map[string]string{"namespace": "demo", "service": "books", "pod": "set-level"},
				Addrs: []*destinationv1.WeightedAddr{
					{Addr: tcp("127.0.0.1:4143"), Weight: 3, Identity: "spiffe://cluster.local/ns/demo/sa/books", MetricLabels: map[string]string{"pod": "books-0"}},
					{Addr: tcp("[2001:db8::1]:80")},
				},
			}}},
			want: update{kind: updateAdd, add: []resolve.Endpoint{
				{Addr: "127.0.0.1:4143", Weight: 3, Identity: "spiffe://cluster.local/ns/demo/sa/books",
					Labels: map[string]string{"namespace": "demo", "service": "books", "pod": "books-0"}},
				{Addr: "[2001:db8::1]:80", Labels: map[string]string{"namespace": "demo", "service": "books", "pod": "set-level"}},
			}},
		},
		{
			name: "remove",
			msg: &destinationv1.Update{Update: &destinationv1.Update_Remove{Remove: &destinationv1.AddrSet{
				Addrs: []*netv1.TcpAddress{tcp("10.0.0.1:80"), tcp("10.0.0.2:81")},
			}}},
			want: update{kind: updateRemove, remove: []string{"10.0.0.1:80", "10.0.0.2:81"}},
		},
		{
			name: "no endpoints",
			msg: &destinationv1.Update{Update: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{
				Exists: true, Reason: "no ready pods",
			}}},
			want: update{kind: updateNoEndpoints, exists: true, reason: "no ready pods"},
		},
		{
			name: "no endpoints, unknown service",
			msg:  &destinationv1.Update{Update: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{}}},
			want: update{kind: updateNoEndpoints},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proto.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeUpdate(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("decodeUpdate:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestDecodeGarbage: a peer's garbage is an error, never a panic.
func TestDecodeGarbage(t *testing.T) {
	bad := func(m proto.Message) []byte { b, _ := proto.Marshal(m); return b }
	inputs := map[string][]byte{
		"empty":          nil,
		"truncated":      {0x0a, 0x10, 0x01},
		"bad tag":        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"group":          {0x0b},
		"short ip":       bad(&destinationv1.Update{Update: &destinationv1.Update_Add{Add: &destinationv1.WeightedAddrSet{Addrs: []*destinationv1.WeightedAddr{{Addr: &netv1.TcpAddress{Ip: []byte{1, 2, 3}, Port: 80}}}}}}),
		"port 0":         bad(&destinationv1.Update{Update: &destinationv1.Update_Remove{Remove: &destinationv1.AddrSet{Addrs: []*netv1.TcpAddress{{Ip: []byte{1, 2, 3, 4}}}}}}),
		"port too large": bad(&destinationv1.Update{Update: &destinationv1.Update_Remove{Remove: &destinationv1.AddrSet{Addrs: []*netv1.TcpAddress{{Ip: []byte{1, 2, 3, 4}, Port: 70000}}}}}),
		"missing addr":   bad(&destinationv1.Update{Update: &destinationv1.Update_Add{Add: &destinationv1.WeightedAddrSet{Addrs: []*destinationv1.WeightedAddr{{Weight: 1}}}}}),
	}
	for name, in := range inputs {
		if _, err := decodeUpdate(in); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v, want errMalformed", name, err)
		}
	}
}

func FuzzDecodeUpdate(f *testing.F) {
	b, _ := proto.Marshal(&destinationv1.Update{Update: &destinationv1.Update_Add{Add: &destinationv1.WeightedAddrSet{
		Addrs: []*destinationv1.WeightedAddr{{Addr: tcp("127.0.0.1:80"), MetricLabels: map[string]string{"a": "b"}}},
	}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { decodeUpdate(b) })
}
