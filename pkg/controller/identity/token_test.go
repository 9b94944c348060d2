package identity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestTokenReviewer(t *testing.T) {
	tests := []struct {
		name    string
		status  authnv1.TokenReviewStatus
		apiErr  error
		wantNS  string
		wantSA  string
		invalid bool
	}{
		{name: "service account", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{Audience}, User: authnv1.UserInfo{Username: "system:serviceaccount:demo:web"}}, wantNS: "demo", wantSA: "web"},
		{name: "not authenticated", status: authnv1.TokenReviewStatus{}, invalid: true},
		{name: "error", status: authnv1.TokenReviewStatus{Error: "token expired"}, invalid: true},
		{name: "wrong audience", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"api"}, User: authnv1.UserInfo{Username: "system:serviceaccount:demo:web"}}, invalid: true},
		{name: "a user", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{Audience}, User: authnv1.UserInfo{Username: "alice"}}, invalid: true},
		{name: "api down", apiErr: errors.New("connection refused")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset()
			client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
				tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
				if tr.Spec.Token != "tok" || len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != Audience {
					t.Errorf("review spec = %+v", tr.Spec)
				}
				tr.Status = tt.status
				return true, tr, tt.apiErr
			})
			ns, sa, err := TokenReviewer{Client: client}.Validate(context.Background(), []byte("tok"))
			switch {
			case tt.apiErr != nil:
				if err == nil || errors.Is(err, ErrInvalidToken) {
					t.Errorf("got %v, want a transient error", err)
				}
			case tt.invalid:
				if !errors.Is(err, ErrInvalidToken) {
					t.Errorf("got %v, want ErrInvalidToken", err)
				}
			default:
				if err != nil || ns != tt.wantNS || sa != tt.wantSA {
					t.Errorf("got %q %q %v, want %q %q", ns, sa, err, tt.wantNS, tt.wantSA)
				}
			}
		})
	}
}

func TestLocalTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := WriteLocalTokens(path, LocalTokens{Tokens: []LocalToken{
		{Token: "aaa", Identity: "spiffe://cluster.local/ns/demo/sa/web"},
		{Token: "bbb", Identity: "spiffe://cluster.local/ns/demo/sa/db"},
	}}); err != nil {
		t.Fatal(err)
	}
	f := LocalTokenFile{Path: path}
	ns, sa, err := f.Validate(context.Background(), []byte("bbb\n"))
	if err != nil || ns != "demo" || sa != "db" {
		t.Errorf("bbb: got %q %q %v", ns, sa, err)
	}
	if _, _, err := f.Validate(context.Background(), []byte("ccc")); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("unknown token: got %v, want ErrInvalidToken", err)
	}
	if _, err := (LocalTokenFile{Path: path, TrustDomain: "example.org"}).Load(); err == nil {
		t.Error("identities of another trust domain: no error")
	}
	if err := os.WriteFile(path, []byte("tokens:\n- token: x\n  identity: web\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Validate(context.Background(), []byte("x")); err == nil || errors.Is(err, ErrInvalidToken) {
		t.Errorf("bad file: got %v, want a file error", err)
	}
}
