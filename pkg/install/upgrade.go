package install

import (
	"context"
	"fmt"
	"io"
	"time"

	"helm.sh/helm/v3/pkg/chartutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Names of the identity objects upgrade reads the certificates back from.
const (
	IssuerSecretName    = "conduit-identity-issuer"
	TrustRootsConfigMap = "conduit-identity-trust-roots"
	WebhookSecretName   = "conduit-proxy-injector-tls"
	trustRootsBundleKey = "ca-bundle.crt"
)

// UpgradeOptions configure an upgrade.
type UpgradeOptions struct {
	Values ValueOptions
	// Identity, when given, replaces the installed trust anchors and issuer
	// (rotating an expiring or expired issuer); all three files together.
	Identity IdentityFiles
	Version  string // the control plane version to upgrade to (the CLI's)
	Now      time.Time
}

// NotInstalledError says there is nothing to upgrade or uninstall.
type NotInstalledError struct{ Namespace string }

func (e *NotInstalledError) Error() string {
	return fmt.Sprintf("no Conduit control plane in namespace %s (configmap %s not found): install it with `conduit install`, or name its namespace with -L", e.Namespace, ConfigMapName)
}

// InstalledValues reads the values the user gave the install in ns (not the
// chart's defaults of that version), with the certificates and keys from the
// cluster's identity objects.
func (c *Client) InstalledValues(ctx context.Context, ns string, now time.Time) (vals map[string]any, version string, err error) {
	core := c.Kube.CoreV1()
	cm, err := core.ConfigMaps(ns).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", &NotInstalledError{Namespace: ns}
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading configmap %s/%s: %w", ns, ConfigMapName, explain(err))
	}
	// Installs before UserValuesKey existed recorded only the merged values:
	// upgrading those keeps their old chart defaults.
	recorded, ok := cm.Data[UserValuesKey]
	if !ok {
		recorded = cm.Data["values"]
	}
	parsed, err := chartutil.ReadValues([]byte(recorded))
	if err != nil {
		return nil, "", fmt.Errorf("configmap %s/%s has unreadable values (fix or restore it, then retry): %w", ns, ConfigMapName, err)
	}
	vals = parsed.AsMap()
	// The new version is the CLI's, not the recorded one.
	delete(vals, "controlPlaneVersion")

	issuer, err := core.Secrets(ns).Get(ctx, IssuerSecretName, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("reading the issuer secret %s/%s: %w", ns, IssuerSecretName, explain(err))
	}
	roots, err := core.ConfigMaps(ns).Get(ctx, TrustRootsConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("reading the trust roots configmap %s/%s: %w", ns, TrustRootsConfigMap, explain(err))
	}
	setIdentity(vals, &Identity{
		TrustAnchorsPEM: roots.Data[trustRootsBundleKey],
		IssuerCertPEM:   string(issuer.Data["tls.crt"]),
		IssuerKeyPEM:    string(issuer.Data["tls.key"]),
	})

	wh := &WebhookCerts{}
	if s, err := core.Secrets(ns).Get(ctx, WebhookSecretName, metav1.GetOptions{}); err == nil {
		wh = &WebhookCerts{CAPEM: string(s.Data["ca.crt"]), CertPEM: string(s.Data["tls.crt"]), KeyPEM: string(s.Data["tls.key"])}
	} else if !apierrors.IsNotFound(err) {
		return nil, "", fmt.Errorf("reading the webhook secret %s/%s: %w", ns, WebhookSecretName, explain(err))
	}
	if cert, err := parseCert([]byte(wh.CertPEM)); err != nil || now.Add(RenewBefore).After(cert.NotAfter) {
		// Missing, unreadable or about to expire: make new ones.
		if wh, err = GenerateWebhookCerts(now, ns); err != nil {
			return nil, "", err
		}
	}
	setWebhook(vals, wh)
	return vals, cm.Data["version"], nil
}

// RenderUpgrade re-renders the install in ns at opts.Version, keeping its
// values and certificates and applying opts.Values on top.
func (c *Client) RenderUpgrade(ctx context.Context, ns string, opts UpgradeOptions) (objs []*unstructured.Unstructured, fromVersion string, err error) {
	ch, err := LoadChart(opts.Version)
	if err != nil {
		return nil, "", err
	}
	vo := opts.Values
	if vo.Namespace == "" {
		vo.Namespace = ns
	}
	// The new values alone, before the cluster is read; Render checks them
	// merged with the installed ones.
	if err := vo.Check(); err != nil {
		return nil, "", err
	}
	stored, fromVersion, err := c.InstalledValues(ctx, ns, opts.Now)
	if err != nil {
		return nil, "", err
	}
	vals, err := vo.Merge(stored)
	if err != nil {
		return nil, "", err
	}
	vals["controlPlaneVersion"] = opts.Version
	if opts.Identity.given() {
		// Validated as it is loaded.
		id, err := LoadIdentityFiles(opts.Now, opts.Identity.TrustAnchors, opts.Identity.IssuerCert, opts.Identity.IssuerKey)
		if err != nil {
			return nil, "", err
		}
		setIdentity(vals, id)
	} else {
		id := identityFromValues(vals)
		if err := id.Validate(opts.Now); err != nil {
			return nil, "", fmt.Errorf("the installed identity is not usable (%w): give a new one with --identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file (or put a valid issuer signed by the trust anchor into secret %s/%s), then retry", err, ns, IssuerSecretName)
		}
	}
	objs, err = Render(ch, vals)
	if err != nil {
		return nil, "", err
	}
	// Keep the install's record of its namespace (and so, the user's
	// namespace out of the objects).
	if created, recorded, err := c.NamespaceRecord(ctx, ns); err != nil {
		return nil, "", err
	} else if recorded {
		if objs, err = recordNamespace(objs, created); err != nil {
			return nil, "", err
		}
	}
	return objs, fromVersion, nil
}

// Plan compares the rendered objects with the cluster using server-side
// dry-run applies, and lists what an upgrade would create, update and prune.
func (c *Client) Plan(ctx context.Context, ns string, objs []*unstructured.Unstructured, force bool) ([]Change, error) {
	// A server-side dry run needs the same permissions as the real apply.
	if err := c.CheckPermissions(ctx, objs, "get", "list", "patch", "delete"); err != nil {
		return nil, err
	}
	var changes []Change
	planned := map[ObjectKey]bool{}
	for _, obj := range objs {
		key := KeyOf(obj)
		planned[key] = true
		live, err := c.Get(ctx, obj)
		if err != nil {
			return nil, err
		}
		after, err := c.Apply(ctx, obj, true, force)
		if err != nil {
			return nil, err
		}
		d, err := diffObjects(key, live, after)
		if err != nil {
			return nil, err
		}
		switch {
		case live == nil:
			changes = append(changes, Change{Key: key, Action: ActionCreate, Diff: d, Object: obj})
		case d != "":
			changes = append(changes, Change{Key: key, Action: ActionUpdate, Diff: d, Object: obj})
		}
	}
	inv, err := c.Inventory(ctx, ns)
	if err != nil {
		return nil, err
	}
	for _, live := range inv {
		key := KeyOf(live)
		if planned[key] {
			continue
		}
		d, err := diffObjects(key, live, nil)
		if err != nil {
			return nil, err
		}
		changes = append(changes, Change{Key: key, Action: ActionDelete, Diff: d, Object: live})
	}
	return changes, nil
}

// WritePlan prints changes as unified diffs, or "No changes".
func WritePlan(w io.Writer, changes []Change) {
	if len(changes) == 0 {
		fmt.Fprintln(w, "No changes: the control plane is up to date.")
		return
	}
	for _, ch := range changes {
		fmt.Fprintf(w, "# %s %s\n%s", ch.Action, ch.Key, ch.Diff)
	}
	counts := map[Action]int{}
	for _, ch := range changes {
		counts[ch.Action]++
	}
	fmt.Fprintf(w, "Plan: %d to create, %d to update, %d to delete.\n", counts[ActionCreate], counts[ActionUpdate], counts[ActionDelete])
}

// Upgrade creates the Gateway API CRDs that are absent (InstallGatewayAPI),
// applies the rendered objects, prunes what the plan deletes, and waits
// for readiness when wait is non-nil.
func (c *Client) Upgrade(ctx context.Context, objs []*unstructured.Unstructured, changes []Change, force bool, wait *WaitOptions, report Reporter) error {
	gatewayAPI, err := GatewayAPIObjects()
	if err != nil {
		return err
	}
	if err := c.gatewayAPIStep(ctx, gatewayAPI, report); err != nil {
		return err
	}
	if err := c.applyAll(ctx, objs, force, report); err != nil {
		return err
	}
	var prune []*unstructured.Unstructured
	for _, ch := range changes {
		if ch.Action == ActionDelete {
			prune = append(prune, ch.Object)
		}
	}
	if len(prune) > 0 {
		err := step(report, fmt.Sprintf("Pruning %d objects the new version no longer has", len(prune)), func(detail func(string)) error {
			for _, obj := range prune {
				detail(KeyOf(obj).String())
				if err := c.Delete(ctx, obj); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if wait == nil {
		return nil
	}
	return step(report, fmt.Sprintf("Waiting for the control plane to be ready (timeout %s)", wait.Timeout), func(detail func(string)) error {
		return c.WaitReady(ctx, objs, *wait, detail)
	})
}
