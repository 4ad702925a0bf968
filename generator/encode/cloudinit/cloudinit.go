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
	// SSHAuthorizedKeys go to cloud-init's default user.
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys,omitempty"`
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
//
// Assets whose paths, names and contents are all of the kinds kubestrap
// renders (see appendUserData) are written directly, which is much faster;
// any other is marshalled by yaml.v3 with checked scalar styles
// (marshalUserData). Both give the same bytes for the same assets.
func UserData(a render.Assets) ([]byte, error) {
	if err := layout.Check(a); err != nil {
		return nil, fmt.Errorf("cloud-init user-data for node %q: %w", a.Node, err)
	}
	a, err := lower(a)
	if err != nil {
		return nil, err
	}
	if out, ok := appendUserData(make([]byte, 0, sizeHint(a)), a); ok {
		return out, nil
	}
	return marshalUserData(a)
}

// marshalUserData is UserData for assets that layout.Check accepted, by way
// of yaml.v3: it handles every input, at roughly a hundred times the cost of
// appendUserData, and is the reference appendUserData is tested against.
func marshalUserData(a render.Assets) ([]byte, error) {
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
	for _, u := range a.Restart {
		// write_files changed its configuration after it started.
		ud.RunCmd = append(ud.RunCmd, command{"systemctl", "try-restart", u})
	}
	for _, u := range a.Units {
		ud.RunCmd = append(ud.RunCmd, command{"systemctl", "enable", "--now", u.Name})
	}
	ud.SSHAuthorizedKeys = a.SSHAuthorizedKeys

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

// The fixed parts of the document as marshalUserData's encoder writes them
// (block sequences indented by 2 under their key, runcmd entries as flow
// sequences on one line: yaml.v3 sets no line width, so it never wraps one).
// Owner and its user and group are plain scalars; the tests that compare
// appendUserData with marshalUserData fail if a change to Owner makes that
// untrue.
const (
	fileOwner   = "    owner: " + Owner + "\n"
	filePerm    = "    permissions: \""
	fileContent = "    content: "
	fileB64     = "    encoding: b64\n" + fileContent
	installArgs = "  - [install, -d, -m, \""
	daemonLine  = "  - [systemctl, daemon-reload]\n"
	restartArgs = "  - [systemctl, try-restart, "
	enableArgs  = "  - [systemctl, enable, --now, "
	// contentIndent is where the lines of a content block start.
	contentIndent = 6
)

var ownerArgs = func() string {
	owner, group, _ := strings.Cut(Owner, ":")
	return "\", -o, " + owner + ", -g, " + group + ", "
}()

// appendUserData appends to dst what marshalUserData returns for a, provided
// every scalar in it is of a kind whose YAML is known in advance: paths and
// unit names that are plainWords, text contents that are
// layout.IsPlainLiteral (written by layout.AppendLiteral) and binary contents
// whose base64 is plainBase64. Modes are known to be octal digits, which
// yaml.v3 quotes because they read as integers. For anything else it reports
// false, leaving dst in an unspecified state. a must have passed
// layout.Check.
func appendUserData(dst []byte, a render.Assets) ([]byte, bool) {
	if len(a.Files)+len(a.Units)+len(a.Dirs) == 0 || len(a.SSHAuthorizedKeys) > 0 {
		// yaml.v3 writes an empty mapping as "{}", and keys are quoted as
		// yaml.v3 sees fit. (Fetches are lowered by UserData first.)
		return dst, false
	}
	dst = append(dst, Header...)
	if len(a.Files)+len(a.Units) > 0 {
		dst = append(dst, "write_files:\n"...)
	}
	for _, f := range a.Files {
		if !plainWord(f.Path) {
			return dst, false
		}
		m, _ := layout.UnixMode(f.Mode)
		dst = appendFileHead(dst, f.Path, m)
		switch {
		case layout.IsPlainLiteral(f.Contents):
			dst = append(dst, fileContent...)
			dst = layout.AppendLiteral(dst, f.Contents, contentIndent)
		case !layout.IsText(f.Contents):
			dst = append(dst, fileB64...)
			start := len(dst)
			dst = base64.StdEncoding.AppendEncode(dst, f.Contents)
			if !plainBase64(dst[start:]) {
				return dst, false
			}
			dst = append(dst, '\n')
		default:
			return dst, false
		}
	}
	for _, u := range a.Units {
		p := layout.UnitPath(u.Name)
		if !plainWord(p) || !plainWord(u.Name) || !layout.IsPlainLiteral(u.Contents) {
			return dst, false
		}
		dst = appendFileHead(dst, p, uint32(render.UnitMode.Perm()))
		dst = append(dst, fileContent...)
		dst = layout.AppendLiteral(dst, u.Contents, contentIndent)
	}
	if len(a.Dirs)+len(a.Units)+len(a.Restart) > 0 {
		dst = append(dst, "runcmd:\n"...)
	}
	for _, d := range a.Dirs {
		if !plainWord(d.Path) {
			return dst, false
		}
		m, _ := layout.UnixMode(d.Mode)
		dst = append(dst, installArgs...)
		dst = appendOctal(dst, m, 5)
		dst = append(dst, ownerArgs...)
		dst = append(dst, d.Path...)
		dst = append(dst, "]\n"...)
	}
	if len(a.Units) > 0 {
		dst = append(dst, daemonLine...)
	}
	for _, u := range a.Restart {
		if !plainWord(u) {
			return dst, false
		}
		dst = append(dst, restartArgs...)
		dst = append(dst, u...)
		dst = append(dst, "]\n"...)
	}
	for _, u := range a.Units {
		dst = append(dst, enableArgs...)
		dst = append(dst, u.Name...)
		dst = append(dst, "]\n"...)
	}
	return dst, true
}

// appendFileHead appends a write_files entry up to its content.
func appendFileHead(dst []byte, path string, mode uint32) []byte {
	dst = append(dst, "  - path: "...)
	dst = append(dst, path...)
	dst = append(dst, '\n')
	dst = append(dst, fileOwner...)
	dst = append(dst, filePerm...)
	dst = appendOctal(dst, mode, 4)
	return append(dst, "\"\n"...)
}

// appendOctal appends m (at most 0o777, as layout.UnixMode guarantees) in
// octal with leading zeros to width digits: what octal and dirMode return.
func appendOctal(dst []byte, m uint32, width int) []byte {
	for range width - 3 {
		dst = append(dst, '0')
	}
	return append(dst, byte('0'+m>>6&7), byte('0'+m>>3&7), byte('0'+m&7))
}

// sizeHint is a generous estimate of the size of a's user-data, so that
// appendUserData rarely has to grow its buffer.
func sizeHint(a render.Assets) int {
	n := len(Header) + 64
	for _, f := range a.Files {
		n += 96 + len(f.Path) + len(f.Contents)*4/3
	}
	for _, u := range a.Units {
		n += 160 + 2*len(u.Name) + len(u.Contents)*4/3
	}
	for _, d := range a.Dirs {
		n += 64 + len(d.Path)
	}
	return n
}

// plainWord reports whether yaml.v3 writes s unquoted both as a block
// mapping value and as an item of a flow sequence. It accepts a path (s
// starts with '/') or a dotted name starting with a letter (a unit name), made
// only of ASCII letters, digits and "/._+@=-". Such a string has no YAML
// indicator, quote, space or line break in it, so only what it would resolve
// to as a plain scalar could make yaml.v3 quote it, and it resolves to a
// string: yaml.v3 tries numbers and timestamps only after a leading digit,
// sign or dot, and the reserved words it checks (true, null, .inf, yes, off,
// ...) contain neither a '/' nor a '.' after a letter.
func plainWord(s string) bool {
	if s == "" {
		return false
	}
	dot := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '/', c == '_', c == '+', c == '@', c == '=', c == '-':
		case c == '.':
			dot = true
		default:
			return false
		}
	}
	c := s[0]
	return c == '/' || dot && ('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z')
}

// plainBase64 reports whether yaml.v3 writes the base64 text b unquoted as a
// block mapping value: base64 has no indicator, space or line break in it, so
// as in plainWord only resolving could make it quote b, and b resolves to a
// string if it starts with '/' or with a letter and is too long for a
// reserved word (the longest, "false", has five letters).
func plainBase64(b []byte) bool {
	if len(b) < 6 {
		return false
	}
	c := b[0]
	return c == '/' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// metaData's fields are layout.Text because yaml.v3 writes a string with a
// line break as a literal block, which for some strings (a lone newline, a
// leading tab) does not read back; node names with either are not
// hostnames, but MetaData still must not write a document that means
// something else.
type metaData struct {
	InstanceID    layout.Text `yaml:"instance-id"`
	LocalHostname layout.Text `yaml:"local-hostname"`
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

// MetaData returns a's NoCloud meta-data: its instance-id (see InstanceID),
// computed from userData, which must be UserData(a), and local-hostname, the
// node name.
func MetaData(a render.Assets, userData []byte) ([]byte, error) {
	if a.Node == "" {
		return nil, fmt.Errorf("cloud-init meta-data: node name is empty")
	}
	if !bytes.HasPrefix(userData, []byte(Header)) {
		return nil, fmt.Errorf("cloud-init meta-data for node %q: the user-data given is not a %s document", a.Node, strings.TrimSpace(Header))
	}
	id := InstanceID(a.Node, userData)
	if plainName(a.Node) {
		// id, the node name, "-" and twelve hex digits, is then a
		// plainName as well, and too long to be a reserved word.
		out := make([]byte, 0, len(mdID)+len(id)+len(mdHost)+len(a.Node)+1)
		out = append(out, mdID...)
		out = append(out, id...)
		out = append(out, mdHost...)
		out = append(out, a.Node...)
		return append(out, '\n'), nil
	}
	out, err := yaml.Marshal(metaData{InstanceID: layout.Text(id), LocalHostname: layout.Text(a.Node)})
	if err != nil {
		return nil, fmt.Errorf("marshalling cloud-init meta-data for node %q: %w", a.Node, err)
	}
	return out, nil
}

const (
	mdID   = "instance-id: "
	mdHost = "\nlocal-hostname: "
)

// plainName reports whether yaml.v3 writes s unquoted as a block mapping
// value, for the node names people use: s starts with an ASCII letter, has
// only letters, digits and "._-" in it, and is not one of the words yaml.v3
// reads as, or quotes for YAML 1.1 readers as, a boolean or null. As in
// plainWord, nothing else that starts with a letter resolves to anything but
// a string.
func plainName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	switch s {
	case "true", "True", "TRUE", "false", "False", "FALSE", "null", "Null", "NULL",
		"y", "Y", "yes", "Yes", "YES", "on", "On", "ON",
		"n", "N", "no", "No", "NO", "off", "Off", "OFF":
		return false
	}
	return true
}
