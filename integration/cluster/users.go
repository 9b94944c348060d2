package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// UserKubeconfig writes a kubeconfig that authenticates as user, member of
// groups, and returns its path. The user has no RBAC bindings: grant what a
// test needs with Roles/RoleBindings naming the user (kind User) or a group.
//
// The credential is a client certificate signed by the cluster's CA
// (CommonName = user, Organization = groups), so any user can be made at any
// time without restarting the API server.
func (c *Cluster) UserKubeconfig(user string, groups ...string) (string, error) {
	if user == "" {
		return "", fmt.Errorf("user name is empty")
	}
	certPEM, keyPEM, err := c.pki.clientCert(user, groups)
	if err != nil {
		return "", fmt.Errorf("issuing a client certificate for %s: %w", user, err)
	}
	path := filepath.Join(c.Dir, "users", "user-"+unsafeFileChars.ReplaceAllString(user, "_")+".kubeconfig")
	auth := &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	if err := c.writeKubeconfig(path, user, auth); err != nil {
		return "", err
	}
	return path, nil
}

// ServiceAccountKubeconfig creates ServiceAccount namespace/name if it does
// not exist, requests a bearer token for it (TokenRequest, valid for ttl;
// 0 means an hour, the API server's minimum is 10 minutes) and
// writes a kubeconfig using that token. The user the API server sees is
// system:serviceaccount:<namespace>:<name>, in groups
// system:serviceaccounts and system:serviceaccounts:<namespace>.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, name string, ttl time.Duration) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating ServiceAccount %s/%s: %w", namespace, name, err)
	}
	if ttl == 0 {
		ttl = time.Hour
	}
	secs := int64(ttl / time.Second)
	tr, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	path := filepath.Join(c.Dir, "users", "sa-"+namespace+"-"+name+".kubeconfig")
	user := "system:serviceaccount:" + namespace + ":" + name
	if err := c.writeKubeconfig(path, user, &clientcmdapi.AuthInfo{Token: tr.Status.Token}); err != nil {
		return "", err
	}
	return path, nil
}
