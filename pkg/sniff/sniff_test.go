package sniff

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

func selfSigned(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestListener: plaintext comes through whole, TLS is terminated, a client
// that sends nothing holds up nobody, and Close cuts it short.
func TestListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := selfSigned(t)
	l := NewListener(raw, time.Minute, func() *tls.Config { return cfg }, nil)
	defer func() { l.Close(); l.Wait() }()

	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	plain, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.Write([]byte("GET / HTTP/1.1\r\n"))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "GET / HTTP/1.1\r\n" {
		t.Errorf("plaintext read %q, %v", buf, err)
	}
	c.Close()

	go func() {
		tc, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			tc.Write([]byte("hi"))
			tc.Close()
		}
	}()
	c, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*tls.Conn); !ok {
		t.Fatalf("a TLS client got a %T", c)
	}
	if _, err := io.ReadFull(c, buf[:2]); err != nil || string(buf[:2]) != "hi" {
		t.Errorf("over TLS read %q, %v", buf[:2], err)
	}
	c.Close()
}

// TestListenerWithoutTLSConfig: TLS is refused while there is no
// configuration; plaintext still works.
func TestListenerWithoutTLSConfig(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(raw, time.Second, func() *tls.Config { return nil }, nil)
	defer func() { l.Close(); l.Wait() }()
	if _, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true}); err == nil {
		t.Error("TLS handshake succeeded without a configuration")
	}
	plain, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.Write([]byte("x"))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
