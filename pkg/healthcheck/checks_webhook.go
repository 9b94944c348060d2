package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/conduitmesh/conduit/pkg/install"
	"github.com/conduitmesh/conduit/pkg/pki"
)

func (s *state) webhook(deadline time.Time) Category {
	ns := s.opts.ControlPlaneNamespace
	dnsName := ControllerName + "." + ns + ".svc"
	upgrade := s.cmd("upgrade")
	newCert := fmt.Sprintf("delete the Secret and let `%s` issue a new certificate: `kubectl -n %s delete secret %s && %s`", upgrade, ns, WebhookSecretName, upgrade)
	renew := fmt.Sprintf("`%s` issues a new webhook certificate when less than 60 days are left", upgrade)
	reapply := fmt.Sprintf("`%s` re-applies the MutatingWebhookConfiguration with the caBundle from Secret %s/%s (add --force-conflicts if it was edited by hand)", upgrade, ns, WebhookSecretName)
	var mwh *admissionregistrationv1.MutatingWebhook
	return Category{ID: Webhook, Checkers: []Checker{
		{
			Description: "webhook certificate Secret is readable",
			Hint:        newCert,
			Required:    true,
			Check: func(ctx context.Context) error {
				sec, err := s.client.CoreV1().Secrets(ns).Get(ctx, WebhookSecretName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("Secret %s/%s does not exist", ns, WebhookSecretName)
				}
				if err != nil {
					return err
				}
				cert, err := certAndKey(sec.Data["tls.crt"], sec.Data["tls.key"])
				if err != nil {
					return fmt.Errorf("Secret %s/%s: %w", ns, WebhookSecretName, err)
				}
				if _, err := pki.Parse(sec.Data["ca.crt"]); err != nil {
					return fmt.Errorf("Secret %s/%s key ca.crt: %w", ns, WebhookSecretName, err)
				}
				s.webhookCert, s.webhookCAPEM = cert, sec.Data["ca.crt"]
				return nil
			},
		},
		{
			Description: "webhook certificate is within its validity period",
			Hint:        renew,
			Check: func(context.Context) error {
				return validNow(s.webhookCert, s.now(), "webhook certificate")
			},
		},
		{
			Description: "webhook certificate is valid for at least 60 days",
			Hint:        renew,
			Warning:     true,
			Check: func(context.Context) error {
				return validFor(s.webhookCert, s.now(), ExpiryWarning, "webhook certificate")
			},
		},
		{
			Description: "webhook certificate is valid for " + dnsName,
			Hint:        newCert,
			Check: func(context.Context) error {
				if err := s.webhookCert.VerifyHostname(dnsName); err != nil {
					return fmt.Errorf("webhook certificate %q is not valid for %s (DNS names %v)", s.webhookCert.Subject.CommonName, dnsName, s.webhookCert.DNSNames)
				}
				return nil
			},
		},
		{
			Description: "webhook certificate is signed by its CA",
			Hint:        newCert,
			Check: func(context.Context) error {
				if !signedByAny(s.webhookCert, s.webhookCAPEM) {
					return fmt.Errorf("webhook certificate %q is not signed by the CA in Secret %s/%s key ca.crt", s.webhookCert.Subject.CommonName, ns, WebhookSecretName)
				}
				return nil
			},
		},
		{
			Description: "MutatingWebhookConfiguration " + WebhookConfigName + " exists",
			Hint:        reapply,
			Required:    true,
			Check: func(ctx context.Context) error {
				cfg, err := s.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfigName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("MutatingWebhookConfiguration %s does not exist", WebhookConfigName)
				}
				if err != nil {
					return err
				}
				for i := range cfg.Webhooks {
					if cfg.Webhooks[i].Name == WebhookName {
						mwh = &cfg.Webhooks[i]
						return nil
					}
				}
				return fmt.Errorf("MutatingWebhookConfiguration %s has no webhook %s", WebhookConfigName, WebhookName)
			},
		},
		{
			Description: "webhook caBundle matches the webhook certificate",
			Hint:        reapply,
			Check: func(context.Context) error {
				if len(mwh.ClientConfig.CABundle) == 0 {
					return fmt.Errorf("webhook %s has no caBundle", WebhookName)
				}
				if _, err := pki.Parse(mwh.ClientConfig.CABundle); err != nil {
					return fmt.Errorf("webhook %s caBundle: %w", WebhookName, err)
				}
				if !signedByAny(s.webhookCert, mwh.ClientConfig.CABundle) {
					return fmt.Errorf("the caBundle of webhook %s does not verify the serving certificate in Secret %s/%s: the API server will refuse to call the injector", WebhookName, ns, WebhookSecretName)
				}
				return nil
			},
		},
		{
			Description: "webhook calls the controller Service",
			Hint:        reapply,
			Check: func(context.Context) error {
				svc := mwh.ClientConfig.Service
				if svc == nil {
					return fmt.Errorf("webhook %s calls a URL, not Service %s/%s", WebhookName, ns, ControllerName)
				}
				port := int32(443)
				if svc.Port != nil {
					port = *svc.Port
				}
				path := ""
				if svc.Path != nil {
					path = *svc.Path
				}
				if svc.Namespace != ns || svc.Name != ControllerName || port != 443 || path != "/inject" {
					return fmt.Errorf("webhook %s calls Service %s/%s port %d path %q; want %s/%s port 443 path /inject", WebhookName, svc.Namespace, svc.Name, port, path, ns, ControllerName)
				}
				return nil
			},
		},
		{
			Description: "webhook never injects kube-system or the control plane namespace",
			Hint:        reapply,
			Check: func(context.Context) error {
				if mwh.NamespaceSelector == nil {
					return fmt.Errorf("webhook %s has no namespaceSelector: it would inject every namespace", WebhookName)
				}
				sel, err := metav1.LabelSelectorAsSelector(mwh.NamespaceSelector)
				if err != nil {
					return fmt.Errorf("webhook %s namespaceSelector: %w", WebhookName, err)
				}
				for _, name := range []string{"kube-system", ns} {
					if sel.Matches(labels.Set{"kubernetes.io/metadata.name": name}) {
						return fmt.Errorf("the namespaceSelector of webhook %s matches namespace %s", WebhookName, name)
					}
				}
				return nil
			},
		},
		{
			Description:   "proxy injector adds the proxy to new pods",
			Hint:          "the probe reads namespaces to pick where to dry-run a pod: it needs `kubectl auth can-i list namespaces`",
			RetryDeadline: deadline,
			Check: func(ctx context.Context) error {
				probeNS, err := install.InjectorProbeNamespace(ctx, s.client, mwh.NamespaceSelector)
				if err != nil {
					return err
				}
				if probeNS == "" {
					return &HintError{Warning: true, Err: fmt.Errorf("the namespaceSelector of webhook %s covers no namespace: the injector cannot be probed", WebhookName), Hint: reapply}
				}
				err = install.ProbeInjector(ctx, s.client, probeNS)
				var notInjected *install.NotInjectedError
				switch {
				case err == nil:
					return nil
				case errors.As(err, &notInjected):
					return &HintError{Err: err, Hint: install.InjectorHint(mwh)}
				}
				return &HintError{Warning: true, Err: err, Hint: fmt.Sprintf("the probe is a server-side dry run of creating a pod in namespace %s: it needs `kubectl auth can-i create pods -n %s`, and a namespace whose admission accepts a plain pod", probeNS, probeNS)}
			},
		},
	}}
}
