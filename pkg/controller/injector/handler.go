// Package injector is the proxy-injector admission webhook: AdmissionReview
// v1 requests for Pods in, JSON patches that add the proxy out, served over
// TLS with a serving certificate that is reloaded when its files change.
package injector

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"

	"github.com/conduitmesh/conduit/pkg/inject"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxReviewBytes bounds a request body; the API server caps objects at
// about 3 MiB.
const maxReviewBytes = 8 << 20

// Config configures the webhook handler.
type Config struct {
	// Proxy is the proxy configuration before each pod's own
	// config.conduit.io/* annotations (image, version, control plane
	// namespace, trust domain, …); start from inject.DefaultProxyConfig.
	// TrustAnchorsPEM must be set: without it pods are admitted uninjected,
	// with a warning.
	Proxy inject.ProxyConfig
	// Namespaces reads the labels and annotations of the pod's namespace.
	Namespaces NamespaceGetter
	// OtherMeshes are the meshes whose pods are admitted uninjected (nil:
	// inject.DefaultOtherMeshes()).
	OtherMeshes []inject.OtherMesh
	// Logger; nil discards.
	Logger *slog.Logger
}

// NewHandler returns the webhook's handler: POST /inject takes an
// AdmissionReview v1 and answers with one (a JSON patch when the pod is
// injected). Malformed requests get a 400 with the reason.
func NewHandler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Namespaces == nil {
		cfg.Namespaces = StaticNamespaces{}
	}
	h := &handler{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /inject", h.serveInject)
	return mux
}

type handler struct{ cfg Config }

func (h *handler) serveInject(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			http.Error(w, fmt.Sprintf("unsupported content type %q: send application/json", ct), http.StatusUnsupportedMediaType)
			return
		}
	}
	var review admissionv1.AdmissionReview
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err := dec.Decode(&review); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("request body larger than %d bytes", maxReviewBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "decoding AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		http.Error(w, fmt.Sprintf("expected an admission.k8s.io/v1 AdmissionReview, got %s %s", review.APIVersion, review.Kind), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	resp, err := h.review(r, review.Request)
	if err != nil {
		// Let the API server apply the webhook's failurePolicy.
		h.cfg.Logger.Error("injecting pod", "namespace", review.Request.Namespace, "name", review.Request.Name, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Response: resp,
	}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "encoding AdmissionReview: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// review decides on one request. An error means the injector could not
// decide (the namespace could not be read).
func (h *handler) review(r *http.Request, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	log := h.cfg.Logger.With("namespace", req.Namespace, "name", podName(req))
	if req.DryRun != nil && *req.DryRun {
		log = log.With("dryRun", true) // e.g. `conduit install --wait`'s probe: nothing starts
	}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return allow, nil
	}
	ns, err := h.cfg.Namespaces.Namespace(r.Context(), req.Namespace)
	if err != nil {
		return nil, err
	}
	ns.Name = req.Namespace
	injected, reason, err := inject.InjectPod(req.Object.Raw, ns, h.cfg.Proxy, h.cfg.OtherMeshes)
	if err != nil {
		log.Warn("pod not injected", "err", err)
		allow.Warnings = []string{"conduit: the pod was not injected: " + err.Error()}
		return allow, nil
	}
	if injected == nil {
		log.Debug("pod not injected", "reason", reason)
		return allow, nil
	}
	patch, err := jsonPatch(req.Object.Raw, injected)
	if err != nil {
		return nil, err
	}
	log.Info("pod injected")
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch, allow.PatchType = patch, &pt
	return allow, nil
}

// podName is the pod's name, or its generateName when the API server has not
// named it yet.
func podName(req *admissionv1.AdmissionRequest) string {
	if req.Name != "" {
		return req.Name
	}
	var meta struct {
		Metadata struct {
			GenerateName string `json:"generateName"`
		} `json:"metadata"`
	}
	if json.Unmarshal(req.Object.Raw, &meta) == nil && meta.Metadata.GenerateName != "" {
		return meta.Metadata.GenerateName + "*"
	}
	return ""
}
