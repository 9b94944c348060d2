// Package httpmatchtest builds the conduit.policy.v1 match messages that
// the tests of httpmatch's users (authz, route) marshal with the generated
// types and decode by hand. Tests only: it links pkg/api.
package httpmatchtest

import policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"

func Exact(p string) *policyv1.PathMatch {
	return &policyv1.PathMatch{Kind: &policyv1.PathMatch_Exact{Exact: p}}
}

func Prefix(p string) *policyv1.PathMatch {
	return &policyv1.PathMatch{Kind: &policyv1.PathMatch_Prefix{Prefix: p}}
}

func Regex(p string) *policyv1.PathMatch {
	return &policyv1.PathMatch{Kind: &policyv1.PathMatch_Regex{Regex: p}}
}

func Header(name, value string) *policyv1.HeaderMatch {
	return &policyv1.HeaderMatch{Name: name, Value: &policyv1.HeaderMatch_Exact{Exact: value}}
}

func HeaderRegex(name, re string) *policyv1.HeaderMatch {
	return &policyv1.HeaderMatch{Name: name, Value: &policyv1.HeaderMatch_Regex{Regex: re}}
}

func Query(name, value string) *policyv1.QueryParamMatch {
	return &policyv1.QueryParamMatch{Name: name, Value: &policyv1.QueryParamMatch_Exact{Exact: value}}
}

func QueryRegex(name, re string) *policyv1.QueryParamMatch {
	return &policyv1.QueryParamMatch{Name: name, Value: &policyv1.QueryParamMatch_Regex{Regex: re}}
}
