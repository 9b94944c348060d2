package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/pkg/inject"
	"github.com/conduitmesh/conduit/pkg/install"
	"github.com/conduitmesh/conduit/pkg/ociimage"
	"github.com/conduitmesh/conduit/pkg/version"
)

// Versions as the release (v{{.Version}}), `make images` (git describe)
// and an un-ldflagged build link them.
var testVersions = []string{"v0.3.0", "v0.3.0-rc.1", "v0.3.0-2-g12b7b85", "12b7b85-dirty", "dev"}

// builtNames returns the names in the index of the archive mkimage writes
// for command linked with version v, version tag first.
func builtNames(t *testing.T, command, v string) []string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), command)
	if err := os.WriteFile(bin, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := newImage(releaseBuild{Path: bin, Name: command, Version: v, Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := ociimage.Write(&buf, img); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no index.json in the archive: %v", err)
		}
		if h.Name != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range idx.Manifests {
			names = append(names, m.Annotations["io.containerd.image.name"])
		}
		return names
	}
}

// The images `conduit install` runs (the controller) and the injector adds
// (the proxy, and conduit-init from the same image) for a version are the
// ones `make images` writes for that version.
func TestNamesMatchInstallAndInjector(t *testing.T) {
	for _, v := range testVersions {
		t.Run(v, func(t *testing.T) {
			controller := builtNames(t, "conduit-controller", v)
			proxy := builtNames(t, "conduit-proxy", v)
			if want := []string{version.ControllerImage + ":" + v, version.ControllerImage + ":latest"}; !slices.Equal(controller, want) {
				t.Fatalf("controller archive names %v, want %v", controller, want)
			}
			if want := []string{version.ProxyImage + ":" + v, version.ProxyImage + ":latest"}; !slices.Equal(proxy, want) {
				t.Fatalf("proxy archive names %v, want %v", proxy, want)
			}

			// conduit install, as the CLI renders it for its own version.
			objs, vals, err := install.RenderInstall(install.InstallOptions{Version: v, Now: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			var dep *corev1.PodSpec
			for _, o := range objs {
				if o.GetKind() == "Deployment" && o.GetName() == "conduit-controller" {
					var d appsv1.Deployment
					if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
						t.Fatal(err)
					}
					dep = &d.Spec.Template.Spec
				}
			}
			if dep == nil || len(dep.Containers) != 1 {
				t.Fatalf("no conduit-controller Deployment with one container rendered: %v", dep)
			}
			c := dep.Containers[0]
			if c.Image != controller[0] {
				t.Errorf("conduit install runs the controller image %q, make images writes %q", c.Image, controller[0])
			}
			proxyImage, proxyVersion := flagValue(c.Args, "--proxy-image"), flagValue(c.Args, "--proxy-version")

			// The webhook: the controller configures the injector from
			// those flags (pkg/controller serveWebhook).
			anchors, _ := vals["identityTrustAnchorsPEM"].(string)
			webhook := inject.DefaultProxyConfig(proxyVersion)
			webhook.Image, webhook.TrustAnchorsPEM = proxyImage, anchors
			if got := injectedImages(t, webhook); len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != proxy[0] }) {
				t.Errorf("the webhook (--proxy-image=%s --proxy-version=%s) injects %v, make images writes %q", proxyImage, proxyVersion, got, proxy[0])
			}
			// `conduit inject`: the CLI's defaults for its own version.
			cli := inject.DefaultProxyConfig(v)
			cli.TrustAnchorsPEM = anchors
			if got := injectedImages(t, cli); len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != proxy[0] }) {
				t.Errorf("conduit inject injects %v, make images writes %q", got, proxy[0])
			}
		})
	}
}

func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// injectedImages injects a pod with cfg and returns the images of the
// containers the injector added (everything but "app").
func injectedImages(t *testing.T, cfg inject.ProxyConfig) []string {
	t.Helper()
	pod := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop"},"spec":{"containers":[{"name":"app","image":"example/web"}]}}`)
	out, reason, err := inject.InjectPod(pod, inject.Namespace{Name: "shop", Annotations: map[string]string{inject.AnnotationInject: inject.ValueEnabled}}, cfg, nil)
	if err != nil || out == nil {
		t.Fatalf("injecting: %v (%s)", err, reason)
	}
	var p corev1.Pod
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	var images []string
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name != "app" {
			images = append(images, c.Image)
		}
	}
	return images
}

// goreleaser.yaml's kos publish the repositories pkg/version names, tagged
// with the version the builds link (v{{.Version}} both), on the base the
// archives stand in for.
func TestGoreleaserKos(t *testing.T) {
	data, err := os.ReadFile("../../goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Builds []struct {
			ID      string   `json:"id"`
			Ldflags []string `json:"ldflags"`
			Env     []string `json:"env"`
			Flags   []string `json:"flags"`
		} `json:"builds"`
		Kos []struct {
			ID           string   `json:"id"`
			Build        string   `json:"build"`
			BaseImage    string   `json:"base_image"`
			Repositories []string `json:"repositories"`
			Tags         []string `json:"tags"`
			Bare         bool     `json:"bare"`
		} `json:"kos"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	const linkedTag = "v{{ .Version }}"
	const versionVar = modulePath + "/pkg/version.Version"
	for _, b := range cfg.Builds {
		if !slices.Contains(b.Ldflags, "-s -w -X "+versionVar+"="+linkedTag) || !slices.Contains(b.Env, "CGO_ENABLED=0") || !slices.Contains(b.Flags, "-trimpath") {
			t.Errorf("build %s: ldflags %q env %q flags %q; mkimage expects -s -w -X %s=%s, CGO_ENABLED=0, -trimpath", b.ID, b.Ldflags, b.Env, b.Flags, versionVar, linkedTag)
		}
	}
	seen := map[string]bool{}
	for _, k := range cfg.Kos {
		repo, ok := repository(k.Build)
		if !ok {
			t.Errorf("kos %s builds %s, which mkimage does not pack", k.ID, k.Build)
			continue
		}
		seen[k.Build] = true
		if !slices.Equal(k.Repositories, []string{repo}) || !k.Bare {
			t.Errorf("kos %s: repositories %v bare %v, want [%s] bare", k.ID, k.Repositories, k.Bare, repo)
		}
		if !slices.Equal(k.Tags, []string{linkedTag, "latest"}) {
			t.Errorf("kos %s: tags %v, want [%s latest]", k.ID, k.Tags, linkedTag)
		}
		if k.BaseImage != "gcr.io/distroless/static-debian12:nonroot" {
			t.Errorf("kos %s: base %s; base.go stands in for distroless static-debian12:nonroot", k.ID, k.BaseImage)
		}
	}
	for _, c := range []string{"conduit-proxy", "conduit-controller"} {
		if !seen[c] {
			t.Errorf("goreleaser.yaml ships no image of %s", c)
		}
	}
}
