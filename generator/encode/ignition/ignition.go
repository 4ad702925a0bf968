// Package ignition encodes a node's render.Assets as an Ignition config, by
// way of a Butane source document that is translated with Butane's Go library
// and then checked with Ignition's own validator.
package ignition

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"

	butane "github.com/coreos/butane/config"
	butanecommon "github.com/coreos/butane/config/common"
	ign33 "github.com/coreos/ignition/v2/config/v3_3"
	ign34 "github.com/coreos/ignition/v2/config/v3_4"
	ign35 "github.com/coreos/ignition/v2/config/v3_5"
	ign36 "github.com/coreos/ignition/v2/config/v3_6"
	"github.com/coreos/vcontext/report"
	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
)

// Result is what Encode produces for one node.
type Result struct {
	// Ignition is the validated Ignition config (pretty-printed JSON).
	Ignition []byte
	// Butane is the Butane source Ignition was translated from.
	Butane []byte
	// Warnings are the non-fatal entries of Butane's and Ignition's reports
	// (warnings and info), one line each. `butane --strict` fails on any of
	// them, so callers that want strictness treat a non-empty list as an
	// error.
	Warnings []string
}

// The butane* types mirror the subset of the Butane fcos/flatcar schema
// kubestrap emits. Butane's own Go types are not used: there is one set per
// variant and spec version, and their yaml tags lack omitempty, so marshalling
// them would emit every field of the schema as null or empty.
type butaneConfig struct {
	Variant string        `yaml:"variant"`
	Version string        `yaml:"version"`
	Passwd  butanePasswd  `yaml:"passwd,omitempty"`
	Storage butaneStorage `yaml:"storage,omitempty"`
	Systemd butaneSystemd `yaml:"systemd,omitempty"`
}

type butanePasswd struct {
	Users []butaneUser `yaml:"users,omitempty"`
}

type butaneUser struct {
	Name              string   `yaml:"name"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
}

type butaneStorage struct {
	Directories []butaneDir  `yaml:"directories,omitempty"`
	Files       []butaneFile `yaml:"files,omitempty"`
	Links       []butaneLink `yaml:"links,omitempty"`
}

// butaneLink is a symlink; overwrite, as for files, so that both documents
// replace what the image has there.
type butaneLink struct {
	Path      string      `yaml:"path"`
	Target    string      `yaml:"target"`
	Overwrite bool        `yaml:"overwrite"`
	User      butaneOwner `yaml:"user"`
	Group     butaneOwner `yaml:"group"`
}

type butaneOwner struct {
	Name string `yaml:"name"`
}

type butaneDir struct {
	Path  string      `yaml:"path"`
	Mode  octalMode   `yaml:"mode"`
	User  butaneOwner `yaml:"user"`
	Group butaneOwner `yaml:"group"`
}

type butaneFile struct {
	Path string `yaml:"path"`
	// Overwrite is always true: without it Ignition fails the boot if a
	// file is already there, where cloud-init's write_files replaces it, and
	// the two documents must behave alike. (Directories keep the default,
	// under which Ignition only fixes the mode of an existing one, as
	// install -d does; overwrite would empty them.)
	Overwrite bool           `yaml:"overwrite"`
	Mode      octalMode      `yaml:"mode"`
	User      butaneOwner    `yaml:"user"`
	Group     butaneOwner    `yaml:"group"`
	Contents  butaneResource `yaml:"contents"`
}

// butaneResource carries text inline, so config.bu stays readable; anything
// that is not valid UTF-8 goes as a base64 data URL instead.
type butaneResource struct {
	Inline *layout.Text `yaml:"inline,omitempty"`
	Source string       `yaml:"source,omitempty"`
	// Verification makes Ignition refuse (and fail the boot on) fetched
	// contents whose hash differs.
	Verification *butaneVerification `yaml:"verification,omitempty"`
}

type butaneVerification struct {
	Hash string `yaml:"hash"`
}

type butaneSystemd struct {
	Units []butaneUnit `yaml:"units,omitempty"`
}

type butaneUnit struct {
	Name    string `yaml:"name"`
	Enabled bool   `yaml:"enabled"`
	// Contents is nil for a unit the OS ships, only enabled.
	Contents *layout.Text `yaml:"contents,omitempty"`
}

// octalMode marshals as a YAML 1.1 octal integer (0644), the form Butane's
// documentation uses and people read; yaml.v3, which Butane parses with, reads
// it back as octal.
type octalMode uint32

func (m octalMode) MarshalYAML() (any, error) {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: fmt.Sprintf("0%03o", uint32(m))}, nil
}

// rootName owns everything kubestrap writes; names, not IDs, so the Butane
// source reads naturally (Ignition resolves them in the target root).
const rootName = "root"

// Butane returns the Butane source for a: directories, files and units, all
// owned by root. Options are checked first (ErrInvalidOptions), then the
// Assets (ErrInvalidGenerated).
func Butane(a render.Assets, o Options) ([]byte, error) {
	r, err := o.resolve()
	if err != nil {
		return nil, err
	}
	if a, err = lower(a, r.variant); err != nil {
		return nil, err
	}
	return butaneSource(a, r)
}

func butaneSource(a render.Assets, r resolved) ([]byte, error) {
	if len(a.SSHAuthorizedKeys) > 0 && a.SSHUser == "" {
		return nil, fmt.Errorf("%w: assets for node %q: SSH keys without a user", ErrInvalidGenerated, a.Node)
	}
	if err := layout.Check(a); err != nil {
		return nil, fmt.Errorf("%w: assets for node %q: %w", ErrInvalidGenerated, a.Node, err)
	}
	cfg := butaneConfig{Variant: r.variant, Version: r.butane}
	for _, d := range a.Dirs {
		// layout.Check has vetted every mode, so UnixMode cannot fail here.
		m, _ := layout.UnixMode(d.Mode)
		cfg.Storage.Directories = append(cfg.Storage.Directories, butaneDir{
			Path: d.Path, Mode: octalMode(m), User: butaneOwner{rootName}, Group: butaneOwner{rootName},
		})
	}
	for _, f := range a.Files {
		m, _ := layout.UnixMode(f.Mode)
		bf := butaneFile{Path: f.Path, Overwrite: true, Mode: octalMode(m), User: butaneOwner{rootName}, Group: butaneOwner{rootName}}
		if layout.IsText(f.Contents) {
			t := layout.Text(f.Contents)
			bf.Contents.Inline = &t
		} else {
			bf.Contents.Source = "data:;base64," + base64.StdEncoding.EncodeToString(f.Contents)
		}
		cfg.Storage.Files = append(cfg.Storage.Files, bf)
	}
	sysext := false
	for _, f := range a.Fetches {
		// Ignition fetches the file before the system boots and fails the
		// boot if its hash differs: nothing ever runs an unverified file.
		m, _ := layout.UnixMode(f.Mode)
		cfg.Storage.Files = append(cfg.Storage.Files, butaneFile{
			Path: f.Path, Overwrite: true, Mode: octalMode(m), User: butaneOwner{rootName}, Group: butaneOwner{rootName},
			Contents: butaneResource{Source: f.URL, Verification: &butaneVerification{Hash: f.Hash}},
		})
		if f.Link != "" {
			cfg.Storage.Links = append(cfg.Storage.Links, butaneLink{
				Path: f.Link, Target: f.Path, Overwrite: true, User: butaneOwner{rootName}, Group: butaneOwner{rootName},
			})
		}
		sysext = sysext || f.Sysext
	}
	if len(a.SSHAuthorizedKeys) > 0 {
		cfg.Passwd.Users = append(cfg.Passwd.Users, butaneUser{Name: a.SSHUser, SSHAuthorizedKeys: a.SSHAuthorizedKeys})
	}
	for _, u := range a.Units {
		if !layout.IsText(u.Contents) {
			return nil, fmt.Errorf("%w: unit %q: contents are not valid UTF-8", ErrInvalidGenerated, u.Name)
		}
		// Ignition writes the unit to /etc/systemd/system with mode 0644
		// owned by root, and enables it through a systemd preset, so the
		// unit starts on the first boot Ignition runs in: no explicit
		// "start" is needed.
		t := layout.Text(u.Contents)
		cfg.Systemd.Units = append(cfg.Systemd.Units, butaneUnit{Name: u.Name, Enabled: true, Contents: &t})
	}
	if sysext {
		// It merges the extension at boot, before the kubelet (which is
		// ordered after it).
		cfg.Systemd.Units = append(cfg.Systemd.Units, butaneUnit{Name: render.SysextUnit, Enabled: true})
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("%w: marshalling Butane source for node %q: %w", ErrInvalidGenerated, a.Node, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("%w: marshalling Butane source for node %q: %w", ErrInvalidGenerated, a.Node, err)
	}
	return buf.Bytes(), nil
}

// Encode produces a's Ignition config and the Butane source it came from.
// Errors wrap ErrInvalidOptions for bad options and ErrInvalidGenerated when
// Butane or Ignition rejects the result; the latter carry the report text.
func Encode(a render.Assets, o Options) (Result, error) {
	r, err := o.resolve()
	if err != nil {
		return Result{}, err
	}
	if a, err = lower(a, r.variant); err != nil {
		return Result{}, err
	}
	return encode(a, r, translateOptions())
}

// translateOptions are the options of every Butane translation: Encode's,
// and the Template's stand-in and probe, which must be translated exactly as
// Encode translates for Fill to give Encode's bytes. It is a function so that
// there is one value and nothing can change it.
func translateOptions() butanecommon.TranslateBytesOptions {
	return butanecommon.TranslateBytesOptions{
		// Compressed contents would be gzip data URLs nobody can review;
		// the Template also relies on it (see newTemplate).
		TranslateOptions: butanecommon.TranslateOptions{NoResourceAutoCompression: true},
		Pretty:           true,
	}
}

// encode is Encode with resolved options and Butane's translate options
// given, so the Template can translate with the options it checked.
func encode(a render.Assets, r resolved, topts butanecommon.TranslateBytesOptions) (Result, error) {
	src, err := butaneSource(a, r)
	if err != nil {
		return Result{}, err
	}
	ign, rpt, err := butane.TranslateBytes(src, topts)
	if err != nil {
		// Report positions (line, col) point into the Butane source.
		return Result{}, fmt.Errorf("%w: Butane %s %s translation for node %q: %w\n%s",
			ErrInvalidGenerated, r.variant, r.butane, a.Node, err, strings.TrimSpace(rpt.String()))
	}
	res := Result{Ignition: ign, Butane: src}
	// Butane already ran Ignition's validations during translation, so the
	// same finding shows up in both reports; keep Butane's, whose positions
	// point into config.bu.
	seen := map[string]bool{}
	for _, e := range rpt.Entries {
		seen[e.Message] = true
		res.Warnings = append(res.Warnings, "butane: "+e.String())
	}
	ignRpt, err := parse(ign, r.ignition)
	if err != nil {
		return Result{}, fmt.Errorf("%w: node %q: %w", ErrInvalidGenerated, a.Node, err)
	}
	for _, e := range ignRpt.Entries {
		if !seen[e.Message] {
			res.Warnings = append(res.Warnings, "ignition: "+e.String())
		}
	}
	return res, nil
}

// parse parses ign with the parser of exactly spec, which is stricter than
// ignition/v2/config.Parse: that one accepts any older version and upgrades
// it, so it would not notice Butane emitting a different spec than promised.
// Butane runs Ignition's validation during translation too, but this is the
// code path Ignition itself takes on the node.
func parse(ign []byte, spec string) (report.Report, error) {
	var (
		r   report.Report
		err error
	)
	switch spec {
	case "3.3.0":
		_, r, err = ign33.Parse(ign)
	case "3.4.0":
		_, r, err = ign34.Parse(ign)
	case "3.5.0":
		_, r, err = ign35.Parse(ign)
	case "3.6.0":
		_, r, err = ign36.Parse(ign)
	default:
		// resolve only hands out the specs above; getting here is a bug in
		// the variant table.
		return report.Report{}, fmt.Errorf("no Ignition parser wired up for spec %s", spec)
	}
	if err == nil && r.IsFatal() {
		err = fmt.Errorf("fatal report entries")
	}
	if err != nil {
		return r, fmt.Errorf("Ignition %s parser rejected the config: %w\n%s", spec, err, strings.TrimSpace(r.String()))
	}
	return r, nil
}
