// Package pemcert is the old name of pkg/pki's PEM reading; it forwards
// there until its last importers (pkg/inject, the data-plane and webhook
// checks of pkg/healthcheck) move.
//
// Deprecated: use github.com/conduitmesh/conduit/pkg/pki.
package pemcert

import (
	"crypto/x509"

	"github.com/conduitmesh/conduit/pkg/pki"
)

// ErrNone means the data held no CERTIFICATE block.
var ErrNone = pki.ErrNone

// Parse is pki.Parse.
func Parse(data []byte) ([]*x509.Certificate, error) { return pki.Parse(data) }

// Pool is pki.Pool.
func Pool(data []byte) (*x509.CertPool, error) { return pki.Pool(data) }
