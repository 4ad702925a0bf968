// Package parseback reads generated Ignition and cloud-init documents back
// into one neutral shape, the way the node would act on them, so tests can
// check each document and compare the two without trusting the encoders'
// inputs. It is test support and deliberately strict: anything the encoders
// are not expected to emit is an error rather than something to ignore.
package parseback

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	ignconfig "github.com/coreos/ignition/v2/config"
	"github.com/vincent-petithory/dataurl"
	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/render"
)

// Kinds of filesystem nodes a document creates.
const (
	Dir  = "dir"
	File = "file"
	// Fetched is a file the node downloads (Ignition's remote contents):
	// Contents is "<url> <hash>".
	Fetched = "fetched"
	// Link is a symlink: Contents is its target.
	Link = "link"
)

// Entry is one filesystem node a document creates.
type Entry struct {
	Kind     string
	Path     string
	Mode     uint32
	Owner    string // "user:group"
	Contents []byte // files only
}

// Key is what the cross-check compares: everything but the contents.
func (e Entry) Key() string {
	return fmt.Sprintf("%s %s %04o %s", e.Kind, e.Path, e.Mode, e.Owner)
}

// Doc is what a document does to a node.
type Doc struct {
	// Spec is the Ignition spec version; empty for cloud-init.
	Spec string
	// Entries in document order.
	Entries []Entry
	// Enabled lists the units that are enabled (and started at boot).
	Enabled []string
	// Restarted lists the units restarted once the files are written.
	Restarted []string
	// Masked lists masked units (a user's snippet may mask one).
	Masked []string
	// Commands are runcmd entries other than kubestrap's own (a user's
	// cloud-config may add them), in order.
	Commands [][]string
	// Other holds a cloud-config's keys beyond kubestrap's own.
	Other map[string]any
	// SSHKeys are the authorized keys by user ("" for cloud-init's
	// default user).
	SSHKeys map[string][]string
}

// Lookup finds the entry for p.
func (d Doc) Lookup(p string) (Entry, bool) {
	for _, e := range d.Entries {
		if e.Path == p {
			return e, true
		}
	}
	return Entry{}, false
}

// Keys returns the sorted entry keys.
func (d Doc) Keys() []string {
	var ks []string
	for _, e := range d.Entries {
		ks = append(ks, e.Key())
	}
	sort.Strings(ks)
	return ks
}

const unitDir = "/etc/systemd/system"

// Ignition parses an Ignition config with Ignition's own parser and applies
// Ignition's defaults: files 0644 and directories 0755 owned by root, units
// written 0644 root:root under /etc/systemd/system.
func Ignition(raw []byte) (Doc, error) {
	var head struct {
		Ignition struct {
			Version string `json:"version"`
		} `json:"ignition"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return Doc{}, fmt.Errorf("reading ignition.version: %w", err)
	}
	cfg, rpt, err := ignconfig.Parse(raw)
	if err != nil || rpt.IsFatal() {
		return Doc{}, fmt.Errorf("parsing Ignition config: %v\n%s", err, rpt.String())
	}
	d := Doc{Spec: head.Ignition.Version}
	for _, dir := range cfg.Storage.Directories {
		d.Entries = append(d.Entries, Entry{
			Kind: Dir, Path: dir.Path, Mode: ignMode(dir.Mode, 0o755),
			Owner: ignOwner(dir.User.Name, dir.User.ID) + ":" + ignOwner(dir.Group.Name, dir.Group.ID),
		})
	}
	for _, f := range cfg.Storage.Files {
		if len(f.Append) > 0 {
			return Doc{}, fmt.Errorf("file %s: unexpected append", f.Path)
		}
		if c := f.Contents.Compression; c != nil && *c != "" {
			return Doc{}, fmt.Errorf("file %s: unexpected compression %q", f.Path, *c)
		}
		if f.Contents.Source == nil {
			return Doc{}, fmt.Errorf("file %s: no contents source", f.Path)
		}
		if src := *f.Contents.Source; !strings.HasPrefix(src, "data:") {
			if f.Contents.Verification.Hash == nil {
				return Doc{}, fmt.Errorf("file %s: fetched from %s without a hash", f.Path, src)
			}
			d.Entries = append(d.Entries, Entry{
				Kind: Fetched, Path: f.Path, Mode: ignMode(f.Mode, 0o644),
				Owner:    ignOwner(f.User.Name, f.User.ID) + ":" + ignOwner(f.Group.Name, f.Group.ID),
				Contents: []byte(src + " " + *f.Contents.Verification.Hash),
			})
			continue
		}
		u, err := dataurl.DecodeString(*f.Contents.Source)
		if err != nil {
			return Doc{}, fmt.Errorf("file %s: decoding data URL: %w", f.Path, err)
		}
		d.Entries = append(d.Entries, Entry{
			Kind: File, Path: f.Path, Mode: ignMode(f.Mode, 0o644),
			Owner:    ignOwner(f.User.Name, f.User.ID) + ":" + ignOwner(f.Group.Name, f.Group.ID),
			Contents: u.Data,
		})
	}
	for _, l := range cfg.Storage.Links {
		if l.Hard != nil && *l.Hard {
			return Doc{}, fmt.Errorf("link %s: unexpected hard link", l.Path)
		}
		d.Entries = append(d.Entries, Entry{
			Kind: Link, Path: l.Path, Owner: ignOwner(l.User.Name, l.User.ID) + ":" + ignOwner(l.Group.Name, l.Group.ID),
			Contents: []byte(*l.Target),
		})
	}
	for _, u := range cfg.Passwd.Users {
		if d.SSHKeys == nil {
			d.SSHKeys = map[string][]string{}
		}
		for _, k := range u.SSHAuthorizedKeys {
			d.SSHKeys[u.Name] = append(d.SSHKeys[u.Name], string(k))
		}
	}
	for _, u := range cfg.Systemd.Units {
		if u.Mask != nil && *u.Mask && u.Contents == nil && len(u.Dropins) == 0 {
			d.Masked = append(d.Masked, u.Name)
			continue
		}
		if len(u.Dropins) > 0 || (u.Mask != nil && *u.Mask) {
			return Doc{}, fmt.Errorf("unit %s: unexpected dropins or mask", u.Name)
		}
		if u.Contents == nil {
			// A unit the OS ships, only enabled.
			if u.Enabled != nil && *u.Enabled {
				d.Enabled = append(d.Enabled, u.Name)
			}
			continue
		}
		d.Entries = append(d.Entries, Entry{
			Kind: File, Path: path.Join(unitDir, u.Name), Mode: 0o644, Owner: "root:root",
			Contents: []byte(*u.Contents),
		})
		if u.Enabled != nil && *u.Enabled {
			d.Enabled = append(d.Enabled, u.Name)
		}
	}
	return d, nil
}

// ignMode applies Ignition's default for an unset mode.
func ignMode(m *int, def uint32) uint32 {
	if m == nil {
		return def
	}
	return uint32(*m)
}

// ignOwner names the owner the way cloud-init's owner field does, treating
// "unset" and ID 0 as root like Ignition does.
func ignOwner(name *string, id *int) string {
	switch {
	case name != nil && *name != "":
		return *name
	case id != nil && *id != 0:
		return strconv.Itoa(*id)
	}
	return "root"
}

// CloudConfig is the subset of #cloud-config the encoder emits.
type CloudConfig struct {
	WriteFiles        []WriteFile `yaml:"write_files"`
	RunCmd            [][]string  `yaml:"runcmd"`
	SSHAuthorizedKeys []string    `yaml:"ssh_authorized_keys"`
	// Other is every other key (a user's cloud-config merged in).
	Other map[string]any `yaml:",inline"`
}

// WriteFile is one write_files entry.
type WriteFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
	Encoding    string `yaml:"encoding"`
	Content     string `yaml:"content"`
}

// ParseCloudConfig checks the #cloud-config header and decodes the rest,
// refusing keys the encoder never emits.
func ParseCloudConfig(userData []byte) (CloudConfig, error) {
	body, ok := bytes.CutPrefix(userData, []byte("#cloud-config\n"))
	if !ok {
		return CloudConfig{}, fmt.Errorf("user-data does not start with the #cloud-config line")
	}
	dec := yaml.NewDecoder(bytes.NewReader(body))
	dec.KnownFields(true)
	var cc CloudConfig
	if err := dec.Decode(&cc); err != nil {
		return CloudConfig{}, fmt.Errorf("decoding user-data: %w", err)
	}
	return cc, nil
}

// CloudInit reads user-data the way cloud-init acts on it: write_files first,
// then runcmd, where `install -d` creates or re-modes directories and
// `systemctl enable --now` enables and starts units.
func CloudInit(userData []byte) (Doc, error) {
	cc, err := ParseCloudConfig(userData)
	if err != nil {
		return Doc{}, err
	}
	var d Doc
	for _, wf := range cc.WriteFiles {
		if wf.Permissions == "" {
			return Doc{}, fmt.Errorf("write_files %s: permissions must be explicit", wf.Path)
		}
		if wf.Owner == "" {
			wf.Owner = "root:root" // cloud-init's default
		}
		mode, err := strconv.ParseUint(wf.Permissions, 8, 32)
		if err != nil {
			return Doc{}, fmt.Errorf("write_files %s: permissions %q: %w", wf.Path, wf.Permissions, err)
		}
		content := []byte(wf.Content)
		switch wf.Encoding {
		case "", "text/plain":
		case "b64", "base64":
			if content, err = base64.StdEncoding.DecodeString(wf.Content); err != nil {
				return Doc{}, fmt.Errorf("write_files %s: %w", wf.Path, err)
			}
		default:
			return Doc{}, fmt.Errorf("write_files %s: unexpected encoding %q", wf.Path, wf.Encoding)
		}
		d.Entries = append(d.Entries, Entry{Kind: File, Path: wf.Path, Mode: uint32(mode), Owner: wf.Owner, Contents: content})
	}
	reloaded := false
	for _, cmd := range cc.RunCmd {
		switch {
		case len(cmd) > 0 && cmd[0] == "install":
			dirs, err := installDirs(cmd)
			if err != nil {
				return Doc{}, err
			}
			for _, e := range dirs {
				if _, dup := d.Lookup(e.Path); dup {
					return Doc{}, fmt.Errorf("runcmd %q: %s is also written as a file", cmd, e.Path)
				}
				d.Entries = append(d.Entries, e)
			}
		case strings.Join(cmd, " ") == "systemctl daemon-reload":
			reloaded = true
		case len(cmd) == 4 && cmd[0] == "systemctl" && cmd[1] == "enable" && cmd[2] == "--now":
			if !reloaded {
				return Doc{}, fmt.Errorf("runcmd %q: systemd was not told to reload the units written", cmd)
			}
			d.Enabled = append(d.Enabled, cmd[3])
		case len(cmd) == 3 && cmd[0] == "systemctl" && cmd[1] == "try-restart":
			d.Restarted = append(d.Restarted, cmd[2])
		case len(d.Enabled) > 0:
			// After kubestrap's: a user's own.
			d.Commands = append(d.Commands, cmd)
		default:
			return Doc{}, fmt.Errorf("unexpected runcmd %q", cmd)
		}
	}
	d.Other = cc.Other
	if len(cc.SSHAuthorizedKeys) > 0 {
		d.SSHKeys = map[string][]string{"": cc.SSHAuthorizedKeys}
	}
	return d, nil
}

// installDirs interprets `install -d [-m MODE] [-o USER] [-g GROUP] DIR...`
// as GNU install does: missing modes are 0755 and missing owners the caller,
// which for cloud-init is root.
func installDirs(cmd []string) ([]Entry, error) {
	mode, user, group, isDir := uint32(0o755), "root", "root", false
	args := cmd[1:]
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		flag := args[0]
		if flag == "-d" {
			isDir = true
			args = args[1:]
			continue
		}
		if len(args) < 2 {
			return nil, fmt.Errorf("runcmd %q: %s needs a value", cmd, flag)
		}
		val := args[1]
		args = args[2:]
		switch flag {
		case "-m":
			m, err := strconv.ParseUint(val, 8, 32)
			if err != nil {
				return nil, fmt.Errorf("runcmd %q: mode %q: %w", cmd, val, err)
			}
			mode = uint32(m)
		case "-o":
			user = val
		case "-g":
			group = val
		default:
			return nil, fmt.Errorf("runcmd %q: unexpected flag %s", cmd, flag)
		}
	}
	if !isDir || len(args) == 0 {
		return nil, fmt.Errorf("runcmd %q: not an install -d of directories", cmd)
	}
	var es []Entry
	for _, p := range args {
		es = append(es, Entry{Kind: Dir, Path: p, Mode: mode, Owner: user + ":" + group})
	}
	return es, nil
}

// Diff lists how doc differs from what a asks for: every directory, file and
// unit with its mode, root ownership and exact contents, and every unit
// enabled. An empty result means the document does exactly what a says.
func Diff(doc Doc, a render.Assets) []string {
	want := map[string]Entry{}
	var order []string
	add := func(e Entry) {
		want[e.Path] = e
		order = append(order, e.Path)
	}
	for _, d := range a.Dirs {
		add(Entry{Kind: Dir, Path: d.Path, Mode: unixMode(d.Mode), Owner: "root:root"})
	}
	for _, f := range a.Files {
		add(Entry{Kind: File, Path: f.Path, Mode: unixMode(f.Mode), Owner: "root:root", Contents: f.Contents})
	}
	var wantEnabled []string
	for _, u := range a.Units {
		add(Entry{Kind: File, Path: path.Join(render.UnitDir, u.Name), Mode: unixMode(render.UnitMode), Owner: "root:root", Contents: u.Contents})
		wantEnabled = append(wantEnabled, u.Name)
	}
	var diffs []string
	got := map[string]bool{}
	for _, e := range doc.Entries {
		if got[e.Path] {
			diffs = append(diffs, fmt.Sprintf("%s is created twice", e.Path))
		}
		got[e.Path] = true
		w, ok := want[e.Path]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("unexpected %s", e.Key()))
			continue
		case e.Key() != w.Key():
			diffs = append(diffs, fmt.Sprintf("got %s, want %s", e.Key(), w.Key()))
		}
		if !bytes.Equal(e.Contents, w.Contents) {
			diffs = append(diffs, fmt.Sprintf("%s: contents differ:\n got  %q\n want %q", e.Path, e.Contents, w.Contents))
		}
	}
	for _, p := range order {
		if !got[p] {
			diffs = append(diffs, fmt.Sprintf("missing %s", want[p].Key()))
		}
	}
	if !slices.Equal(doc.Enabled, wantEnabled) {
		diffs = append(diffs, fmt.Sprintf("enabled units %q, want %q", doc.Enabled, wantEnabled))
	}
	return diffs
}

// unixMode converts a permission-only mode; the encoders refuse any other
// bits, and Diff is only used on Assets they accepted.
func unixMode(m fs.FileMode) uint32 {
	return uint32(m.Perm())
}
