// Command revproxy is the floor a Go L7 proxy can reach: a plain
// httputil.ReverseProxy in front of one HTTP/1.1 target.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	target := flag.String("target", "", "HOST:PORT to proxy to")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "revproxy: --target HOST:PORT is required")
		os.Exit(2)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: *target})
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	srv := &http.Server{Addr: *listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	os.Exit(1)
}
