package stats

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// RegistryFilePods lists pods from the `proxies` of a local registry file,
// re-reading it when it changes. A file that turns unreadable or invalid
// keeps the last good list (and reports the error until one is read).
func RegistryFilePods(path string) Pods {
	r := &registryPods{path: path}
	return PodsFunc(r.pods)
}

type registryPods struct {
	path string

	mu   sync.Mutex // guards raw and last
	raw  []byte
	last []Pod
}

func (r *registryPods) pods(context.Context) ([]Pod, error) {
	raw, err := os.ReadFile(r.path)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if r.last != nil {
			return r.last, nil
		}
		return nil, fmt.Errorf("reading registry file: %w", err)
	}
	if string(raw) == string(r.raw) {
		return r.last, nil
	}
	pods, err := ParseRegistryPods(raw)
	if err != nil {
		if r.last != nil {
			return r.last, nil
		}
		return nil, fmt.Errorf("registry file %s: %w", r.path, err)
	}
	r.raw, r.last = raw, pods
	return pods, nil
}

// ParseRegistryPods decodes the proxies of a local registry file (the one
// `conduit demo` writes, see contract.Registry); other keys are ignored here.
func ParseRegistryPods(raw []byte) ([]Pod, error) {
	var reg contract.Registry
	if err := yaml.Unmarshal(raw, &reg); err != nil {
		return nil, err
	}
	pods := make([]Pod, 0, len(reg.Proxies))
	for i, p := range reg.Proxies {
		if p.Namespace == "" || p.Pod == "" {
			return nil, fmt.Errorf("proxies[%d]: namespace and pod are required", i)
		}
		if p.AdminAddress != "" && !strings.Contains(p.AdminAddress, ":") {
			return nil, fmt.Errorf("proxies[%d] (%s/%s): adminAddress %q is not host:port", i, p.Namespace, p.Pod, p.AdminAddress)
		}
		labels := map[string]string{}
		for k, v := range p.Labels {
			labels[k] = v
		}
		pods = append(pods, Pod{Namespace: p.Namespace, Name: p.Pod, AdminAddr: p.AdminAddress,
			Identity: p.Identity, Labels: labels, Running: true})
	}
	return pods, nil
}
