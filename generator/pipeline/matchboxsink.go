package pipeline

import (
	"encoding/json"
	"fmt"
	"io"
	"path"

	"github.com/kubestrap/kubestrap/generator/output"
)

// Matchbox's data layout (poseidon/matchbox: groups select machines, a
// group names a profile, a profile names an Ignition config).
const (
	MatchboxGroups   = "groups"
	MatchboxProfiles = "profiles"
	MatchboxIgnition = "ignition"
)

// MatchboxSink stores each node's Ignition config in matchbox's data
// layout, the output directory being matchbox's data directory: one group
// per node selecting its MAC, naming a profile of the node's, which names
// its config. Matchbox serves all of it to anyone who asks, tokens
// included: see the README.
type MatchboxSink struct {
	Stage *output.Stage
	// MACs are the nodes' MACs, by name; every node needs one.
	MACs map[string]string
}

type matchboxGroup struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Profile  string            `json:"profile"`
	Selector map[string]string `json:"selector"`
}

type matchboxProfile struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	IgnitionID string `json:"ignition_id"`
}

// Node writes the node's group, profile and Ignition config.
func (m MatchboxSink) Node(name string, docs []Document) error {
	mac, ok := m.MACs[name]
	if !ok || mac == "" {
		return fmt.Errorf("node %s has no mac: matchbox selects machines by MAC", name)
	}
	var ign []byte
	for _, d := range docs {
		if d.Name == IgnitionName {
			ign = d.Data
		}
	}
	if ign == nil {
		return fmt.Errorf("node %s has no %s for matchbox to serve", name, IgnitionName)
	}
	config := name + ".ign"
	group, err := json.MarshalIndent(matchboxGroup{ID: name, Name: name, Profile: name, Selector: map[string]string{"mac": mac}}, "", "  ")
	if err != nil {
		return err
	}
	profile, err := json.MarshalIndent(matchboxProfile{ID: name, Name: name, IgnitionID: config}, "", "  ")
	if err != nil {
		return err
	}
	for _, f := range []struct {
		rel  string
		data []byte
	}{
		{path.Join(MatchboxIgnition, config), ign},
		{path.Join(MatchboxProfiles, name+".json"), append(profile, '\n')},
		{path.Join(MatchboxGroups, name+".json"), append(group, '\n')},
	} {
		if err := m.Stage.WriteFile(f.rel, f.data, SecretMode); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
	}
	return nil
}

// File, Commit and Abort are DirSink's.
func (m MatchboxSink) File(name string, write func(io.Writer) error) error {
	return DirSink{Stage: m.Stage}.File(name, write)
}

func (m MatchboxSink) Commit() ([]string, error) { return DirSink{Stage: m.Stage}.Commit() }

func (m MatchboxSink) Abort() error { return m.Stage.Abort() }
