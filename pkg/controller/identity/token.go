package identity

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// Audience is the audience a proxy's projected service-account token must carry.
const Audience = "identity.conduit.io"

// ErrInvalidToken means a token proves no identity: it is unknown, expired,
// for another audience, or not a service account's.
var ErrInvalidToken = errors.New("invalid token")

// TokenValidator tells which identity a token proves.
type TokenValidator interface {
	// Validate returns the namespace and service account the token belongs
	// to, an error wrapping ErrInvalidToken if it proves nothing, or another
	// error if it could not be checked now.
	Validate(ctx context.Context, token []byte) (namespace, serviceAccount string, err error)
}

// TokenReviewer validates Kubernetes service-account tokens with a TokenReview.
type TokenReviewer struct {
	Client kubernetes.Interface
}

// Validate implements TokenValidator.
func (r TokenReviewer) Validate(ctx context.Context, token []byte) (string, string, error) {
	tr, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: string(token), Audiences: []string{Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", "", fmt.Errorf("reviewing token: %w", err)
	}
	if tr.Status.Error != "" {
		return "", "", fmt.Errorf("%w: %s", ErrInvalidToken, tr.Status.Error)
	}
	if !tr.Status.Authenticated {
		return "", "", fmt.Errorf("%w: not authenticated", ErrInvalidToken)
	}
	audienceOK := false
	for _, a := range tr.Status.Audiences {
		audienceOK = audienceOK || a == Audience
	}
	if !audienceOK {
		return "", "", fmt.Errorf("%w: token is not for audience %s", ErrInvalidToken, Audience)
	}
	// Usernames of service accounts are system:serviceaccount:<ns>:<sa>.
	parts := strings.Split(tr.Status.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return "", "", fmt.Errorf("%w: %q is not a service account", ErrInvalidToken, tr.Status.User.Username)
	}
	return parts[2], parts[3], nil
}

// LocalTokens is the token file of local (demo) mode: each proxy is given
// one token, and the file says which identity each token proves.
//
//	tokens:
//	- token: 3q2+7w...
//	  identity: spiffe://cluster.local/ns/demo/sa/web
type LocalTokens struct {
	Tokens []LocalToken `json:"tokens"`
}

// LocalToken maps one token to the identity it proves.
type LocalToken struct {
	Token    string `json:"token"`
	Identity string `json:"identity"`
}

// WriteLocalTokens writes the token file with mode 0600, atomically.
func WriteLocalTokens(path string, t LocalTokens) error {
	data, err := yaml.Marshal(t)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing token file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("writing token file %s: %w", tmp.Name(), werr)
	}
	return os.Rename(tmp.Name(), path)
}

// LocalTokenFile validates tokens against a LocalTokens file, read on every
// call so that a demo can add proxies while the controller runs.
type LocalTokenFile struct {
	Path string
	// TrustDomain, when set, is the only trust domain the file may name.
	TrustDomain string
}

// Load reads and checks the file.
func (f LocalTokenFile) Load() (LocalTokens, error) {
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return LocalTokens{}, fmt.Errorf("reading token file: %w", err)
	}
	var t LocalTokens
	if err := yaml.UnmarshalStrict(data, &t); err != nil {
		return LocalTokens{}, fmt.Errorf("token file %s: %w", f.Path, err)
	}
	for i, tok := range t.Tokens {
		if strings.TrimSpace(tok.Token) == "" {
			return LocalTokens{}, fmt.Errorf("token file %s: tokens[%d] has an empty token", f.Path, i)
		}
		id, err := ParseID(tok.Identity)
		if err != nil {
			return LocalTokens{}, fmt.Errorf("token file %s: tokens[%d]: %w", f.Path, i, err)
		}
		if f.TrustDomain != "" && id.TrustDomain != f.TrustDomain {
			return LocalTokens{}, fmt.Errorf("token file %s: tokens[%d]: identity %s is not in trust domain %s", f.Path, i, id, f.TrustDomain)
		}
	}
	return t, nil
}

// Validate implements TokenValidator. Surrounding white space in the token
// (a trailing newline in a token file) is ignored.
func (f LocalTokenFile) Validate(_ context.Context, token []byte) (string, string, error) {
	t, err := f.Load()
	if err != nil {
		return "", "", err
	}
	token = []byte(strings.TrimSpace(string(token)))
	match := ""
	for _, tok := range t.Tokens {
		if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok.Token)), token) == 1 {
			match = tok.Identity
		}
	}
	if match == "" {
		return "", "", fmt.Errorf("%w: unknown local token", ErrInvalidToken)
	}
	id, err := ParseID(match)
	if err != nil {
		return "", "", err
	}
	return id.Namespace, id.ServiceAccount, nil
}
