// Package ociimage writes single-layer OCI image archives (an OCI image
// layout in a tar) from files on disk, offline and deterministically: the
// same inputs give the same bytes. `make images` packs the release images
// with it, and the real-node harness its pause, CoreDNS and test-app
// images; `ctr images import` loads the archives (no Docker, no registry).
//
// Standard library only.
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
	"path"
	"sort"
	"strings"
	"time"
)

// Image is what goes into an archive.
type Image struct {
	// Refs name the image, e.g. ghcr.io/conduitmesh/conduit-proxy:v1.2.3;
	// each becomes an entry of the layout's index (containerd imports every
	// one of them).
	Refs []string
	// Files are the image's files: path in the image → file on disk. Their
	// parent directories are created (0755, root).
	Files map[string]string
	// Dirs are extra empty directories with their modes, e.g. "/tmp": 01777.
	Dirs map[string]os.FileMode
	// Contents are files given by content (e.g. /etc/passwd), mode 0644.
	Contents map[string][]byte
	// Modes override the mode of given files and directories (e.g. ko's
	// 0555 for /ko-app and its binary).
	Modes map[string]os.FileMode
	// Owners give paths an owner other than root (e.g. /home/nonroot).
	Owners map[string]Owner
	// Entrypoint, Cmd, Env, User and WorkingDir go into the image config.
	Entrypoint, Cmd, Env []string
	User, WorkingDir     string
	// OS and Arch, e.g. linux and amd64.
	OS, Arch string
	// Created is the config's creation time; zero means the Unix epoch, so
	// archives are reproducible.
	Created time.Time
}

// Owner is a numeric user and group.
type Owner struct{ UID, GID int }

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Write writes img as an OCI layout tar to w.
func Write(w io.Writer, img Image) error {
	if len(img.Refs) == 0 {
		return fmt.Errorf("ociimage: no image name")
	}
	if img.OS == "" || img.Arch == "" {
		return fmt.Errorf("ociimage: %s: OS and Arch are required", img.Refs[0])
	}
	layer, diffID, err := buildLayer(img)
	if err != nil {
		return fmt.Errorf("ociimage: %s: %w", img.Refs[0], err)
	}
	created := img.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	config, err := json.Marshal(map[string]any{
		"created":      created.UTC().Format(time.RFC3339),
		"architecture": img.Arch,
		"os":           img.OS,
		"config": map[string]any{
			"Entrypoint": img.Entrypoint, "Cmd": img.Cmd, "Env": img.Env,
			"User": img.User, "WorkingDir": img.WorkingDir,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{"created": created.UTC().Format(time.RFC3339), "created_by": "conduit ociimage"}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        desc(mediaConfig, config),
		"layers":        []descriptor{desc(mediaLayer, layer)},
	})
	if err != nil {
		return err
	}
	md := desc(mediaManifest, manifest)
	md.Platform = &platform{Architecture: img.Arch, OS: img.OS}
	index := map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
	var manifests []descriptor
	for _, ref := range img.Refs {
		d := md
		// containerd names the image from io.containerd.image.name; other
		// tools read the OCI ref name (the tag).
		d.Annotations = map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tagOf(ref)}
		manifests = append(manifests, d)
	}
	index["manifests"] = manifests
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", indexJSON},
		{blobPath(config), config},
		{blobPath(layer), layer},
		{blobPath(manifest), manifest},
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteFile writes img to path (through a temporary file, so a failed
// write leaves no half archive).
func WriteFile(path string, img Image) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := Write(f, img); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func tagOf(ref string) string {
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref[i+1:]
	}
	return "latest"
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func desc(media string, b []byte) descriptor {
	return descriptor{MediaType: media, Digest: digest(b), Size: int64(len(b))}
}

func blobPath(b []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:")
}

// buildLayer returns the gzipped layer and the digest of its uncompressed
// tar (the config's diff_id).
func buildLayer(img Image) (gz []byte, diffID string, err error) {
	type entry struct {
		mode    os.FileMode
		dir     bool
		src     string
		content []byte
		owner   Owner
	}
	entries := map[string]*entry{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = &entry{mode: 0o755, dir: true}
			}
		}
	}
	for dst, src := range img.Files {
		dst = path.Clean("/" + dst)
		st, err := os.Stat(src)
		if err != nil {
			return nil, "", err
		}
		if st.IsDir() {
			return nil, "", fmt.Errorf("%s is a directory: give files", src)
		}
		entries[dst] = &entry{mode: st.Mode().Perm(), src: src}
		addParents(dst)
	}
	for dst, content := range img.Contents {
		dst = path.Clean("/" + dst)
		entries[dst] = &entry{mode: 0o644, content: content}
		addParents(dst)
	}
	for d, mode := range img.Dirs {
		d = path.Clean("/" + d)
		entries[d] = &entry{mode: mode, dir: true}
		addParents(d)
	}
	for p, mode := range img.Modes {
		e, ok := entries[path.Clean("/"+p)]
		if !ok {
			return nil, "", fmt.Errorf("mode for %s, which is not in the image", p)
		}
		e.mode = mode
	}
	for p, o := range img.Owners {
		e, ok := entries[path.Clean("/"+p)]
		if !ok {
			return nil, "", fmt.Errorf("owner for %s, which is not in the image", p)
		}
		e.owner = o
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, n := range names {
		e := entries[n]
		h := &tar.Header{Name: strings.TrimPrefix(n, "/"), ModTime: time.Unix(0, 0), Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if e.owner != (Owner{}) {
			h.Uid, h.Gid, h.Uname, h.Gname = e.owner.UID, e.owner.GID, "", ""
		}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			h.Mode = int64(e.mode & 0o7777) // 0o1777 given as a number keeps its sticky bit
			if e.mode&os.ModeSticky != 0 {
				h.Mode |= 0o1000
			}
			if err := tw.WriteHeader(h); err != nil {
				return nil, "", err
			}
			continue
		}
		data := e.content
		if e.src != "" {
			if data, err = os.ReadFile(e.src); err != nil {
				return nil, "", err
			}
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, int64(e.mode.Perm()), int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	diffID = digest(raw.Bytes())
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestSpeed)
	if err != nil {
		return nil, "", err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return out.Bytes(), diffID, nil
}
