// Package profiles holds kubestrap's embedded kubelet presets, the table of
// kubelet flags, fields and feature gates that Kubernetes releases removed, and
// the table of settings that open a kubelet (Openings).
package profiles

import (
	"embed"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/yaml"
)

//go:embed *.yaml
var files embed.FS

// ErrUnknown means no profile has the name asked for.
var ErrUnknown = errors.New("unknown profile")

const removedFile = "removed.yaml"

// Profile is a kubelet preset. What it opens is not written here but found
// by Openings, from the same table that judges the user's settings.
type Profile struct {
	Name        string `json:"-"`
	Description string `json:"description"`
	// Config holds KubeletConfiguration fields by their JSON names.
	Config map[string]any `json:"config"`
}

// Names lists the embedded profiles.
func Names() []string {
	entries, _ := files.ReadDir(".")
	var names []string
	for _, e := range entries {
		if e.Name() == removedFile {
			continue
		}
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	slices.Sort(names)
	return names
}

// Load returns a fresh copy of the named profile, safe to modify.
func Load(name string) (*Profile, error) {
	if !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
	}
	data, err := files.ReadFile(name + ".yaml")
	if err != nil {
		return nil, err
	}
	p := &Profile{Name: name}
	if err := yaml.UnmarshalStrict(data, p); err != nil {
		return nil, fmt.Errorf("profile %s: %w", name, err)
	}
	return p, nil
}

// Kind is what a Removal removes.
type Kind string

// Kinds of removals.
const (
	Flag        Kind = "flag"
	Field       Kind = "field"
	FeatureGate Kind = "featureGate"
)

// Removal is one row of removed.yaml.
type Removal struct {
	Kind      Kind   `json:"kind"`
	Name      string `json:"name"`
	RemovedIn string `json:"removedIn"`
	Source    string `json:"source"`

	removedIn *version.Version
}

func (r Removal) String() string {
	return fmt.Sprintf("removed in Kubernetes %s (%s)", r.RemovedIn, r.Source)
}

// Removals is the table of removed kubelet flags, fields and feature gates.
type Removals []Removal

// LoadRemovals parses the embedded table.
func LoadRemovals() (Removals, error) {
	data, err := files.ReadFile(removedFile)
	if err != nil {
		return nil, err
	}
	var rs Removals
	if err := yaml.UnmarshalStrict(data, &rs); err != nil {
		return nil, fmt.Errorf("%s: %w", removedFile, err)
	}
	for i := range rs {
		v, err := version.ParseSemantic(rs[i].RemovedIn)
		if err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", removedFile, rs[i].Kind, rs[i].Name, err)
		}
		rs[i].removedIn = v
		switch rs[i].Kind {
		case Flag, Field, FeatureGate:
		default:
			return nil, fmt.Errorf("%s: %s: unknown kind %q", removedFile, rs[i].Name, rs[i].Kind)
		}
	}
	return rs, nil
}

// Find reports whether kubelet at version v no longer accepts the named
// flag, field or feature gate.
func (rs Removals) Find(kind Kind, name string, v *version.Version) (Removal, bool) {
	for _, r := range rs {
		if r.Kind == kind && r.Name == name && v.AtLeast(r.removedIn) {
			return r, true
		}
	}
	return Removal{}, false
}
