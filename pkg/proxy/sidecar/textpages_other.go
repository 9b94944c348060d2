//go:build !linux

package sidecar

// releaseCode is Linux-only (see textpages_linux.go).
func releaseCode() int64 { return 0 }

func fileRSS() int64 { return 0 }
