// Package cloudinit encodes a node's render.Assets as a NoCloud seed: a
// #cloud-config user-data document and its meta-data.
//
// The documents create the same files with the same modes and owners as the
// Ignition encoder's. cloud-init has no way to create an empty directory with
// write_files, and creates missing parents with mode 0755, so directories are
// made (or their modes corrected) by `install -d` in runcmd, which cloud-init
// runs after write_files. Both modules run once per instance, which is why the
// instance-id in meta-data changes whenever user-data does.
package cloudinit

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
)

// Header is the first line cloud-init requires of a cloud-config document.
const Header = "#cloud-config\n"

// Owner is the owner:group of everything kubestrap writes.
const Owner = "root:root"

type userData struct {
	WriteFiles []writeFile `yaml:"write_files,omitempty"`
	RunCmd     []command   `yaml:"runcmd,omitempty"`
}

// command is one runcmd entry. cloud-init shell-quotes each word of a list
// entry, so paths need no quoting of our own.
type command []string

// MarshalYAML writes the command on one line ([install, -d, ...]), which is
// how people write runcmd and far easier to review than a block list.
func (c command) MarshalYAML() (any, error) {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, w := range c {
		var word yaml.Node
		if err := word.Encode(w); err != nil {
			return nil, err
		}
		n.Content = append(n.Content, &word)
	}
	return n, nil
}

type writeFile struct {
	Path  string `yaml:"path"`
	Owner string `yaml:"owner"`
	// Permissions is a quoted octal string: cloud-init's schema requires a
	// string, and a bare 0600 is an integer whose value depends on which YAML
	// version the reader implements.
	Permissions string `yaml:"permissions"`
	// Encoding is "b64" for contents that are not valid UTF-8, which YAML
	// cannot carry as a string.
	Encoding string      `yaml:"encoding,omitempty"`
	Content  layout.Text `yaml:"content"`
}

// octal formats a mode for write_files, which reads it with int(x, 8).
func octal(m uint32) string {
	return fmt.Sprintf("%04o", m)
}

// dirMode formats a directory mode for `install -d -m`. GNU install, like
// chmod, keeps an existing directory's setuid/setgid bits when given a
// four-digit mode such as 0755; a fifth leading zero clears them, which makes
// the mode exact, as Ignition's chmod of an existing directory is.
func dirMode(m uint32) string {
	return fmt.Sprintf("%05o", m)
}

// UserData returns a's #cloud-config user-data: write_files for every file and
// unit, then runcmd to create the directories, reload systemd and enable and
// start every unit.
func UserData(a render.Assets) ([]byte, error) {
	if err := layout.Check(a); err != nil {
		return nil, fmt.Errorf("cloud-init user-data for node %q: %w", a.Node, err)
	}
	var ud userData
	for _, f := range a.Files {
		// layout.Check has vetted every mode, so UnixMode cannot fail here.
		m, _ := layout.UnixMode(f.Mode)
		wf := writeFile{Path: f.Path, Owner: Owner, Permissions: octal(m)}
		if layout.IsText(f.Contents) {
			wf.Content = layout.Text(f.Contents)
		} else {
			wf.Encoding = "b64"
			wf.Content = layout.Text(base64.StdEncoding.EncodeToString(f.Contents))
		}
		ud.WriteFiles = append(ud.WriteFiles, wf)
	}
	for _, u := range a.Units {
		if !layout.IsText(u.Contents) {
			return nil, fmt.Errorf("cloud-init user-data for node %q: unit %q: contents are not valid UTF-8", a.Node, u.Name)
		}
		ud.WriteFiles = append(ud.WriteFiles, writeFile{
			Path: layout.UnitPath(u.Name), Owner: Owner,
			Permissions: octal(uint32(render.UnitMode.Perm())), Content: layout.Text(u.Contents),
		})
	}
	owner, group, _ := strings.Cut(Owner, ":")
	for _, d := range a.Dirs {
		m, _ := layout.UnixMode(d.Mode)
		ud.RunCmd = append(ud.RunCmd, command{"install", "-d", "-m", dirMode(m), "-o", owner, "-g", group, d.Path})
	}
	if len(a.Units) > 0 {
		// write_files put the units in place after systemd started, so it
		// has not read them yet.
		ud.RunCmd = append(ud.RunCmd, command{"systemctl", "daemon-reload"})
	}
	for _, u := range a.Units {
		ud.RunCmd = append(ud.RunCmd, command{"systemctl", "enable", "--now", u.Name})
	}

	var buf bytes.Buffer
	buf.WriteString(Header)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(ud); err != nil {
		return nil, fmt.Errorf("marshalling cloud-init user-data for node %q: %w", a.Node, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshalling cloud-init user-data for node %q: %w", a.Node, err)
	}
	return buf.Bytes(), nil
}

type metaData struct {
	InstanceID    string `yaml:"instance-id"`
	LocalHostname string `yaml:"local-hostname"`
}

// InstanceID is "<node>-<first 12 hex digits of the SHA-256 of userData>".
// cloud-init runs write_files and runcmd once per instance-id, so a seed whose
// user-data changed (a new token, a new kubelet config) must carry a new id or
// a node that already booted from the old seed would ignore it. Identical
// user-data keeps the id, so regenerating unchanged documents does not re-run
// anything. Beware that a new id also re-runs cloud-init's other per-instance
// modules, e.g. SSH host keys are regenerated by default.
func InstanceID(node string, userData []byte) string {
	sum := sha256.Sum256(userData)
	return node + "-" + hex.EncodeToString(sum[:])[:12]
}

// MetaData returns a's NoCloud meta-data: its instance-id (see InstanceID) and
// local-hostname, the node name.
func MetaData(a render.Assets) ([]byte, error) {
	if a.Node == "" {
		return nil, fmt.Errorf("cloud-init meta-data: node name is empty")
	}
	ud, err := UserData(a)
	if err != nil {
		return nil, fmt.Errorf("cloud-init meta-data: %w", err)
	}
	out, err := yaml.Marshal(metaData{InstanceID: InstanceID(a.Node, ud), LocalHostname: a.Node})
	if err != nil {
		return nil, fmt.Errorf("marshalling cloud-init meta-data for node %q: %w", a.Node, err)
	}
	return out, nil
}
