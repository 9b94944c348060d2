package discovery

import "encoding/json"

// ContextToken is what a proxy says about itself in GetDestination.context_token.
type ContextToken struct {
	Namespace string `json:"ns,omitempty"`
	NodeName  string `json:"nodeName,omitempty"`
	Pod       string `json:"pod,omitempty"`
}

// ParseContextToken decodes a context token. Tokens are advisory: anything
// that is not the JSON object above yields the zero token.
func ParseContextToken(s string) ContextToken {
	var t ContextToken
	if s == "" || json.Unmarshal([]byte(s), &t) != nil {
		return ContextToken{}
	}
	return t
}
