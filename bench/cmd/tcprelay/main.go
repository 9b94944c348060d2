// Command tcprelay is the floor a Go L4 proxy can reach: it accepts TCP
// connections and copies bytes both ways to one target with io.CopyBuffer,
// passing half-closes on.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to accept connections on")
	target := flag.String("target", "", "HOST:PORT to relay to")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "tcprelay: --target HOST:PORT is required")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tcprelay: %v\n", err)
		os.Exit(1)
	}
	pool := sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}
	for {
		c, err := ln.Accept()
		if err != nil {
			slog.Error("accept", "err", err)
			os.Exit(1)
		}
		go relay(c.(*net.TCPConn), *target, &pool)
	}
}

func relay(c *net.TCPConn, target string, pool *sync.Pool) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	up := u.(*net.TCPConn)
	defer up.Close()
	var wg sync.WaitGroup
	copyHalf := func(dst, src *net.TCPConn) {
		defer wg.Done()
		buf := pool.Get().(*[]byte)
		defer pool.Put(buf)
		io.CopyBuffer(dst, src, *buf)
		dst.CloseWrite()
	}
	wg.Add(2)
	go copyHalf(up, c)
	go copyHalf(c, up)
	wg.Wait()
}
