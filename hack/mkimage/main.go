// Command mkimage packs conduit-proxy and conduit-controller, built as the
// release builds them, into OCI image archives (`make images`), offline: no
// Docker engine, no registry. Each archive holds the image goreleaser's ko
// ships (goreleaser.yaml kos): the binary at /ko-app/<name>, entrypoint
// /ko-app/<name>, user 65532, the base image's environment plus ko's, and
// no program but the binary. The base image's own files, which cannot be
// fetched here, are stood in for by the few a static binary needs
// (base.go). The archives load with `ctr -n k8s.io images import`.
//
//	go run ./hack/mkimage -version v0.3.0 -out dist/images dist/bin/linux_amd64/conduit-proxy dist/bin/linux_amd64/conduit-controller
//
// The image names and tags come from pkg/version for the version linked
// into the binaries (-version, checked against what each binary prints), the
// same names `conduit install` and the injector use for that version.
//
// It lives in the main module because it imports pkg/version (one home for
// image names) and pkg/ociimage (one packer of image archives, shared with
// the real-node harness); both use the standard library only.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/conduitmesh/conduit/pkg/ociimage"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mkimage:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "dist/images", "directory the archives are written to, one <name>.tar per binary")
	ver := fs.String("version", "", "the version linked into the binaries (checked); their images' tag")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mkimage -version VERSION [-out DIR] BINARY...\n\nBINARY is conduit-proxy or conduit-controller built with "+releaseFlags+".")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no binaries given: pass the paths of conduit-proxy and/or conduit-controller")
	}
	var builds []releaseBuild
	var imgs []ociimage.Image
	for _, bin := range fs.Args() {
		rb, err := readRelease(bin, *ver)
		if err != nil {
			return err
		}
		img, err := newImage(rb)
		if err != nil {
			return fmt.Errorf("%s: %w", bin, err)
		}
		builds, imgs = append(builds, rb), append(imgs, img)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for i, img := range imgs {
		path := filepath.Join(*out, builds[i].Name+".tar")
		if err := ociimage.WriteFile(path, img); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		fmt.Fprintf(stdout, "%s %s\n", path, strings.Join(img.Refs, " "))
	}
	return nil
}
