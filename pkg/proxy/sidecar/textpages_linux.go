package sidecar

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// releaseCode unmaps the read-only pages of the proxy's own executable
// (its code and constants) from the process, and returns how many bytes
// were released.
//
// conduit-proxy's binary is about 8 MB and, once started, nearly all of it
// was resident (the kernel maps the pages around each one a fault needs),
// which was most of the proxy's RSS: 7.2 MB of 10.7 MB carrying gRPC. The
// code a running proxy uses is a fraction of it; after start-up, the
// pages are unmapped and those still in use fault back in from the page
// cache (minor faults, shared with every other proxy on the node), one by
// one since the first call split the mappings (splitMappings), so the RSS
// holds the working set only (bench/notes.md has the figures).
//
// Only mappings of the executable that are read-only and hold no
// anonymous (copied-on-write) page are released: such a page is exactly
// the file's, so dropping it loses nothing. A dynamically linked build's
// relocated read-only data (RELRO) has anonymous pages and is left alone.
func releaseCode() (released int64) {
	for _, m := range codeMappings() {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), syscall.MADV_DONTNEED); e == 0 {
			released += int64(m.end - m.start)
		}
	}
	return released
}

// codeMapping is an address range of the executable that releaseCode may
// release.
type codeMapping struct{ start, end uint64 }

// codeMappings lists the executable's read-only mappings that hold no
// anonymous page, read from /proc/self/smaps once (reading it takes about
// a millisecond: the kernel walks every mapping's page tables); they do
// not change while the process runs. It splits them (splitMappings).
var codeMappings = sync.OnceValue(func() []codeMapping {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil
	}
	type mapping struct {
		codeMapping
		anon bool
	}
	var ms []mapping
	var cur *mapping
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Bytes()
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		if bytes.IndexByte(f[0], '-') > 0 && !bytes.HasSuffix(f[0], []byte{':'}) {
			// A mapping's header: address range, permissions, offset,
			// device, inode, path.
			cur = nil
			if len(f) < 6 || string(f[5]) != exe || (string(f[1]) != "r-xp" && string(f[1]) != "r--p") {
				continue
			}
			lo, hi, _ := bytes.Cut(f[0], []byte{'-'})
			start, err1 := strconv.ParseUint(string(lo), 16, 64)
			end, err2 := strconv.ParseUint(string(hi), 16, 64)
			if err1 != nil || err2 != nil || end <= start {
				continue
			}
			ms = append(ms, mapping{codeMapping: codeMapping{start: start, end: end}})
			cur = &ms[len(ms)-1]
			continue
		}
		if cur != nil && string(f[0]) == "Anonymous:" && len(f) > 1 && string(f[1]) != "0" {
			cur.anon = true
		}
	}
	var out []codeMapping
	for _, m := range ms {
		if !m.anon {
			out = append(out, m.codeMapping)
		}
	}
	splitMappings(out, uint64(os.Getpagesize()))
	return out
})

// splitMappings cuts each of ms into mappings of size bytes, so that a
// page fault maps the page it needs and no other.
//
// On a fault in a file mapping the kernel maps, besides the page needed,
// the pages around it that the page cache holds (fault-around: 64 KiB),
// within the mapping. The proxy's code and tables are touched sparsely
// (the function tables, pclntab, in many places by every collection and
// stack growth), so at 64 KiB nearly the whole executable was resident
// again soon after each release: pagemap of a meshed proxy carrying gRPC
// showed its steady working set at 5.9 MB of the 8.2, and 7.8 MB at the
// load's start. With each page a mapping of its own, the same proxy holds
// about 2 MB (bench/notes.md).
//
// Adjacent mappings that differ in no flag are merged again by the kernel,
// so every other one is marked MADV_DONTDUMP: left out of a core dump,
// which leaves out file-backed mappings by default anyway
// (coredump_filter). Where madvise refuses, the mappings stay whole and
// only fault-around is lost to releaseCode. The process holds about one
// mapping per 4 KiB of its executable (some 2,100, far below the kernel's
// vm.max_map_count of 65,530).
func splitMappings(ms []codeMapping, size uint64) {
	for _, m := range ms {
		for a := m.start; a+size <= m.end; a += 2 * size {
			if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(a), uintptr(size), madvDontDump); e != 0 {
				return
			}
		}
	}
}

// madvDontDump is MADV_DONTDUMP, which package syscall lacks.
const madvDontDump = 16

// statm is /proc/self/statm, opened once: fileRSS reads it every
// releaseCheckEvery, and a read of an open file takes microseconds where
// opening it again took tens.
var statm = sync.OnceValue(func() *os.File {
	f, _ := os.Open("/proc/self/statm")
	return f
})

// fileRSS is the process's resident file-backed (and shared-memory, which
// the proxy has none of) memory in bytes: the third field of
// /proc/self/statm, in pages. 0 if unknown.
func fileRSS() int64 {
	f := statm()
	if f == nil {
		return 0
	}
	var buf [128]byte
	n, _ := f.ReadAt(buf[:], 0)
	fields := bytes.Fields(buf[:n])
	if len(fields) < 3 {
		return 0
	}
	pages, err := strconv.ParseInt(string(fields[2]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
