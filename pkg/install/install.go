package install

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// IdentityFiles are the user's own identity files; all empty means generate.
type IdentityFiles struct {
	TrustAnchors string
	IssuerCert   string
	IssuerKey    string
}

func (f IdentityFiles) given() bool {
	return f.TrustAnchors != "" || f.IssuerCert != "" || f.IssuerKey != ""
}

// InstallOptions configure a new install.
type InstallOptions struct {
	Values   ValueOptions
	Identity IdentityFiles
	// Version is the control plane version to install (the CLI's).
	Version string
	Now     time.Time
}

// RenderInstall computes the values of a new install, generating any
// certificate the user did not give, and renders the chart.
func RenderInstall(opts InstallOptions) ([]*unstructured.Unstructured, map[string]any, error) {
	ch, err := LoadChart(opts.Version)
	if err != nil {
		return nil, nil, err
	}
	vals, err := opts.Values.Merge(map[string]any{})
	if err != nil {
		return nil, nil, err
	}
	vals["controlPlaneVersion"] = opts.Version
	// Before the certificates are made: a certificate value of the wrong
	// type would otherwise be replaced by a generated one without a word.
	if err := ValidateValues(ch, vals); err != nil {
		return nil, nil, err
	}
	ns := valueOr(vals, ch.Values, "namespace")
	td := valueOr(vals, ch.Values, "identityTrustDomain")
	// Pinned in the recorded user values: upgrades keep them even if a new
	// chart's defaults differ (the identities are issued for td).
	vals["namespace"], vals["identityTrustDomain"] = ns, td
	var id *Identity
	if opts.Identity.given() {
		id, err = LoadIdentityFiles(opts.Now, opts.Identity.TrustAnchors, opts.Identity.IssuerCert, opts.Identity.IssuerKey)
	} else if getString(vals, "identity", "issuer", "crtPEM") != "" {
		id = identityFromValues(vals)
		if err = id.Validate(opts.Now); err != nil {
			err = fmt.Errorf("identity values: %w", err)
		}
	} else {
		id, err = GenerateIdentity(opts.Now, td)
	}
	if err != nil {
		return nil, nil, err
	}
	setIdentity(vals, id)
	wh := &WebhookCerts{
		CAPEM:   getString(vals, "webhook", "caBundlePEM"),
		CertPEM: getString(vals, "webhook", "crtPEM"),
		KeyPEM:  getString(vals, "webhook", "keyPEM"),
	}
	if wh.CertPEM == "" {
		if wh, err = GenerateWebhookCerts(opts.Now, ns); err != nil {
			return nil, nil, err
		}
	}
	setWebhook(vals, wh)
	objs, err := Render(ch, vals)
	if err != nil {
		return nil, nil, err
	}
	return objs, vals, nil
}

func valueOr(vals, defaults map[string]any, key string) string {
	if s, _ := vals[key].(string); s != "" {
		return s
	}
	s, _ := defaults[key].(string)
	return s
}

func setIdentity(vals map[string]any, id *Identity) {
	vals["identityTrustAnchorsPEM"] = pemValue(id.TrustAnchorsPEM)
	setPath(vals, pemValue(id.IssuerCertPEM), "identity", "issuer", "crtPEM")
	setPath(vals, pemValue(id.IssuerKeyPEM), "identity", "issuer", "keyPEM")
}

func setWebhook(vals map[string]any, wh *WebhookCerts) {
	setPath(vals, pemValue(wh.CertPEM), "webhook", "crtPEM")
	setPath(vals, pemValue(wh.KeyPEM), "webhook", "keyPEM")
	setPath(vals, pemValue(wh.CAPEM), "webhook", "caBundlePEM")
}

// pemValue is PEM as the values hold it: exactly one trailing newline, so a
// value read back from the cluster (where the chart trims it) renders the
// same conduit-config as the one installed.
func pemValue(s string) string {
	return strings.TrimSpace(s) + "\n"
}

// TerminatingError refuses to install over an object that is still being
// deleted (by an uninstall that did not wait, or has not finished): the apply
// would succeed and the object would then be gone — for a CRD, with every
// resource of its kind.
type TerminatingError struct{ Key ObjectKey }

func (e *TerminatingError) Error() string {
	return fmt.Sprintf("%s is still being deleted (by an earlier uninstall): wait until it is gone (`kubectl wait --for=delete %s --timeout=5m`), then install again", e.Key, kubectlName(e.Key))
}

// AlreadyInstalledError refuses to install over an existing install.
type AlreadyInstalledError struct{ Namespace, Version string }

func (e *AlreadyInstalledError) Error() string {
	return fmt.Sprintf("Conduit %s is already installed in namespace %s: use `conduit upgrade` to change it, or `conduit uninstall` first", e.Version, e.Namespace)
}

// Namespace returns the namespace the rendered objects install into.
func Namespace(objs []*unstructured.Unstructured) string {
	for _, obj := range objs {
		if obj.GetKind() == "Namespace" {
			return obj.GetName()
		}
	}
	return DefaultNamespace
}

// InstalledVersion returns the version recorded in ns's conduit-config, and
// false when there is no install.
func (c *Client) InstalledVersion(ctx context.Context, ns string) (string, bool, error) {
	cm, err := c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("looking for an existing install (configmap %s/%s): %w", ns, ConfigMapName, explain(err))
	}
	return cm.Data["version"], true, nil
}

// Install applies a rendered install: it refuses to overwrite an existing
// one, checks permissions first, creates the Gateway API CRDs that are
// absent (InstallGatewayAPI), applies in dependency order and waits. It
// records in conduit-config whether it created the namespace; an existing
// namespace is left as it is (see NamespaceCreatedKey).
func (c *Client) Install(ctx context.Context, objs []*unstructured.Unstructured, wait *WaitOptions, report Reporter) error {
	ns := Namespace(objs)
	gatewayAPI, err := GatewayAPIObjects()
	if err != nil {
		return err
	}
	err = step(report, "Checking the cluster", func(func(string)) error {
		if err := c.CheckPermissions(ctx, objs, "get", "create", "patch"); err != nil {
			return err
		}
		if err := c.CheckPermissions(ctx, gatewayAPI, "get", "create"); err != nil {
			return err
		}
		if v, ok, err := c.InstalledVersion(ctx, ns); err != nil {
			return err
		} else if ok {
			return &AlreadyInstalledError{Namespace: ns, Version: v}
		}
		if err := c.checkClusterScopedOwners(ctx, objs, ns); err != nil {
			return err
		}
		exists, err := c.NamespaceExists(ctx, ns)
		if err != nil {
			return err
		}
		objs, err = recordNamespace(objs, !exists)
		return err
	})
	if err != nil {
		return err
	}
	// Before the controller starts, so that it finds the routes served.
	if err := c.gatewayAPIStep(ctx, gatewayAPI, report); err != nil {
		return err
	}
	if err := c.applyAll(ctx, objs, false, report); err != nil {
		return err
	}
	if wait == nil {
		return nil
	}
	return step(report, fmt.Sprintf("Waiting for the control plane to be ready (timeout %s)", wait.Timeout), func(detail func(string)) error {
		return c.WaitReady(ctx, objs, *wait, detail)
	})
}

// applyAll applies objs in order as one reported step.
func (c *Client) applyAll(ctx context.Context, objs []*unstructured.Unstructured, force bool, report Reporter) error {
	return step(report, fmt.Sprintf("Applying %d objects", len(objs)), func(detail func(string)) error {
		for i, obj := range objs {
			detail(fmt.Sprintf("%d/%d %s", i+1, len(objs), KeyOf(obj)))
			if _, err := c.Apply(ctx, obj, false, force); err != nil {
				return err
			}
		}
		return nil
	})
}

// checkClusterScopedOwners refuses to take over cluster-scoped objects (the
// webhook) that belong to a control plane in another namespace, and to apply
// over one that is still being deleted.
func (c *Client) checkClusterScopedOwners(ctx context.Context, objs []*unstructured.Unstructured, ns string) error {
	for _, obj := range objs {
		if obj.GetNamespace() != "" || obj.GetKind() == "Namespace" {
			continue
		}
		live, err := c.Get(ctx, obj)
		if err != nil {
			return err
		}
		if live == nil {
			continue
		}
		if live.GetDeletionTimestamp() != nil {
			return &TerminatingError{Key: KeyOf(obj)}
		}
		if owner := live.GetLabels()[LabelControlPlaneNS]; owner != ns {
			if owner == "" {
				return fmt.Errorf("%s already exists and is not part of a Conduit install: delete it or choose another name", KeyOf(obj))
			}
			return fmt.Errorf("%s belongs to the Conduit control plane in namespace %s: a cluster runs one control plane; uninstall it first (`conduit uninstall -L %s`)", KeyOf(obj), owner, owner)
		}
	}
	return nil
}
