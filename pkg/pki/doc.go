// Package pki is Conduit's one home for X.509: it reads PEM bundles and
// keys, makes the mesh's trust anchor and issuer (and the injector's
// webhook CA), and decides with CheckIssuer whether an issuer may sign
// workload certificates — the rule `conduit install` rejects by, the
// controller refuses to start by and `conduit check` reports by. It uses
// only the standard library, so the proxy may import it.
package pki
