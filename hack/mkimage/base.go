package main

import "os"

// The release images are built on gcr.io/distroless/static-debian12:nonroot,
// which cannot be fetched here (no registry access). What follows stands in
// for the base image: its config (user, working directory, environment) as
// published, and the few of its files a static Go binary relies on. The
// base's other files are left out on purpose: the CA bundle
// /etc/ssl/certs/ca-certificates.crt (Conduit trusts only the mesh's
// anchors and the cluster's CA, both given explicitly), /etc/os-release,
// tzdata and netbase's /etc/services and /etc/protocols (Go has built-in
// fallbacks). Like the base, the image has no shell and no other program.

// Base image config of distroless static:nonroot.
const (
	baseUser       = "65532" // nonroot; its group 65532 comes from /etc/passwd
	baseWorkingDir = "/home/nonroot"
	nonrootID      = 65532
)

// baseEnv returns the base image's environment, in its order.
func baseEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
	}
}

// baseFiles returns the stand-ins for the base's files, by path.
func baseFiles() map[string][]byte {
	return map[string][]byte{
		// The users the base defines: the runtime resolves User 65532's
		// group from /etc/passwd.
		"/etc/passwd": []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
			"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"),
		"/etc/group": []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"),
		// hosts: files, then DNS, as the base says; Go's resolver reads it.
		"/etc/nsswitch.conf": []byte("hosts: files dns\n"),
	}
}

// baseDirs returns the base's directories that matter, with their modes:
// /tmp (sticky, world-writable) and nonroot's home (its owner's only).
func baseDirs() map[string]os.FileMode {
	return map[string]os.FileMode{"/tmp": 0o1777, "/home/nonroot": 0o700}
}
