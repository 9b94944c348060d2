// Package manifests is the Conduit control plane as a Helm chart, embedded so
// the CLI renders exactly what `helm template` renders from this directory.
package manifests

import "embed"

// Chart holds Chart.yaml, values.yaml, values.schema.json (which Helm's
// loader reads and checks every install's values against), values-ha.yaml
// and templates/ (the "all:" prefix keeps _helpers.tpl).
//
//go:embed Chart.yaml values.yaml values.schema.json values-ha.yaml all:templates
var Chart embed.FS

// HAValuesFile is the name of the high-availability values file in Chart.
const HAValuesFile = "values-ha.yaml"
