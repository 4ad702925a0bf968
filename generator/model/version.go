package model

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/version"
)

// The supported Kubernetes versions are MinVersion <= v < VersionLimit: the
// profiles and the removed-flags table under profiles/ describe these minors and
// no others, and rendering for an unknown minor would guess at kubelet flags.
const (
	// NewestVersion is the default kubernetesVersion.
	NewestVersion = "v1.37.2"
	// MinVersion is the oldest supported version.
	MinVersion = "v1.33.0"
	// VersionLimit is the first unsupported version; any release of its minor
	// (pre-releases included) is refused.
	VersionLimit = "v1.38.0"
)

// supportedRange is how problems state the range.
const supportedRange = MinVersion + " <= version < " + VersionLimit

// Version returns the parsed kubernetesVersion (NewestVersion when empty).
// It is nil only when KubernetesVersion is invalid, which Load refuses.
func (c *Cluster) Version() *version.Version {
	s := c.KubernetesVersion
	if s == "" {
		s = NewestVersion
	}
	v, err := version.ParseSemantic(s)
	if err != nil {
		return nil
	}
	return v
}

// parseVersion accepts "1.37.2" or "v1.37.2" in the supported range and returns
// the "v"-prefixed form.
func parseVersion(s string) (string, error) {
	v, err := version.ParseSemantic(s)
	if err != nil {
		return "", fmt.Errorf("%s is not a Kubernetes version like %s", quote(s), NewestVersion)
	}
	norm := "v" + v.String()
	// Compare minors for the limit so that v1.38.0-alpha.1, which sorts
	// below v1.38.0, is refused along with the rest of 1.38.
	limit := version.MustParseSemantic(VersionLimit)
	if v.LessThan(version.MustParseSemantic(MinVersion)) ||
		!version.MajorMinor(v.Major(), v.Minor()).LessThan(version.MajorMinor(limit.Major(), limit.Minor())) {
		return "", fmt.Errorf("%s is not supported (kubestrap supports %s)", norm, supportedRange)
	}
	return norm, nil
}
