package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// eachEntry calls f with every entry of a tar stream.
func eachEntry(t *testing.T, r io.Reader, f func(*tar.Header, io.Reader)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		f(h, tr)
	}
}

// readArchive returns the archive's files by name.
func readArchive(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	eachEntry(t, bytes.NewReader(b), func(h *tar.Header, r io.Reader) {
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = data
	})
	return out
}

func blob(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", digest)
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("blob %s has another digest", digest)
	}
	return b
}

// layerEntries describes each entry of an uncompressed layer with f.
func layerEntries(t *testing.T, layer io.Reader, f func(*tar.Header) string) []string {
	t.Helper()
	var out []string
	eachEntry(t, layer, func(h *tar.Header, _ io.Reader) { out = append(out, f(h)) })
	return out
}

func TestWriteIsAValidReproducibleLayout(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{
		Refs:       []string{"example.test/app:v1", "example.test/app:latest"},
		Files:      map[string]string{"/ko-app/app": bin},
		Contents:   map[string][]byte{"/etc/passwd": []byte("nonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n")},
		Dirs:       map[string]os.FileMode{"/tmp": 0o1777},
		Entrypoint: []string{"/ko-app/app"},
		User:       "65532:65532",
		OS:         "linux", Arch: "amd64",
	}
	var a, b bytes.Buffer
	if err := Write(&a, img); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two writes of the same image differ")
	}
	files := readArchive(t, a.Bytes())
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 2 || index.Manifests[0].Annotations["io.containerd.image.name"] != "example.test/app:v1" ||
		index.Manifests[1].Annotations["org.opencontainers.image.ref.name"] != "latest" {
		t.Fatalf("index: %+v", index.Manifests)
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blob(t, files, index.Manifests[0].Digest), &manifest); err != nil {
		t.Fatal(err)
	}
	var config struct {
		Config struct {
			Entrypoint []string
			User       string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blob(t, files, manifest.Config.Digest), &config); err != nil {
		t.Fatal(err)
	}
	if config.Config.User != "65532:65532" || strings.Join(config.Config.Entrypoint, " ") != "/ko-app/app" {
		t.Errorf("config: %+v", config.Config)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(t, files, manifest.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if config.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Error("diff_id is not the digest of the uncompressed layer")
	}
	got := layerEntries(t, bytes.NewReader(raw), func(h *tar.Header) string { return h.Name + " " + os.FileMode(h.Mode).String() })
	want := "etc/ -rwxr-xr-x|etc/passwd -rw-r--r--|ko-app/ -rwxr-xr-x|ko-app/app -rwxr-xr-x|tmp/ -rwxrwxrwx"
	if strings.Join(got, "|") != want {
		t.Errorf("layer:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
}

func TestWriteRejectsAnImageWithoutName(t *testing.T) {
	if err := Write(io.Discard, Image{OS: "linux", Arch: "amd64"}); err == nil {
		t.Error("no error for an image without a name")
	}
}

// Modes and Owners override what a path gets by default (its file's mode,
// 0755 for directories, root); naming a path not in the image is an error.
func TestModesAndOwners(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{
		Refs:   []string{"example.test/app:v1"},
		Files:  map[string]string{"/ko-app/app": bin},
		Dirs:   map[string]os.FileMode{"/home/nonroot": 0o700},
		Modes:  map[string]os.FileMode{"/ko-app": 0o555, "/ko-app/app": 0o555},
		Owners: map[string]Owner{"/home/nonroot": {UID: 65532, GID: 65532}},
		OS:     "linux", Arch: "amd64",
	}
	var buf bytes.Buffer
	if err := Write(&buf, img); err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, buf.Bytes())
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	var manifest struct {
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blob(t, files, index.Manifests[0].Digest), &manifest); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(t, files, manifest.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	got := layerEntries(t, zr, func(h *tar.Header) string { return fmt.Sprintf("%s %o %d:%d", h.Name, h.Mode, h.Uid, h.Gid) })
	want := "home/ 755 0:0|home/nonroot/ 700 65532:65532|ko-app/ 555 0:0|ko-app/app 555 0:0"
	if strings.Join(got, "|") != want {
		t.Errorf("layer:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
	img.Owners = map[string]Owner{"/nowhere": {UID: 1}}
	if err := Write(io.Discard, img); err == nil || !strings.Contains(err.Error(), "/nowhere") {
		t.Errorf("owner of a path not in the image: %v", err)
	}
}
