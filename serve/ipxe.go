package serve

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// BootProfile is what /ipxe boots a machine with: a kernel, its initrds and
// its command line, as for a Flatcar or Fedora CoreOS PXE image.
type BootProfile struct {
	Kernel string   `yaml:"kernel"`
	Initrd []string `yaml:"initrd"`
	// Args are the kernel's arguments, one per item. {ignition_url} is
	// this server's /ignition URL for the machine, {nocloud_url} its
	// /nocloud/<mac>/ seed, {node} the node's name.
	Args []string `yaml:"args"`
}

// maxProfileSize bounds the boot profile file.
const maxProfileSize = 64 << 10

var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

var knownPlaceholders = map[string]bool{"{ignition_url}": true, "{nocloud_url}": true, "{node}": true}

// LoadBootProfile reads and checks a boot profile file.
func LoadBootProfile(file string) (*BootProfile, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxProfileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(data) > maxProfileSize {
		return nil, fmt.Errorf("%s: over %d bytes: not a boot profile", file, maxProfileSize)
	}
	return ParseBootProfile(file, data)
}

// ParseBootProfile checks a boot profile: http(s) URLs, arguments without
// spaces or control characters (each reaches an iPXE script line), and only
// the placeholders it knows.
func ParseBootProfile(file string, data []byte) (p *BootProfile, err error) {
	defer func() {
		// The YAML decoder panics on some hostile documents.
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("%s: not a boot profile: %v", file, r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	p = &BootProfile{}
	if err := dec.Decode(p); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var errs []error
	check := func(field, v string, isURL bool) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: %s: required", file, field))
			return
		}
		if i := strings.IndexFunc(v, func(c rune) bool { return c <= ' ' || c == 0x7f }); i >= 0 {
			errs = append(errs, fmt.Errorf("%s: %s: %q holds a space or control character: an iPXE script line would split there", file, field, v))
			return
		}
		for _, ph := range placeholder.FindAllString(v, -1) {
			if !knownPlaceholders[ph] {
				errs = append(errs, fmt.Errorf("%s: %s: unknown placeholder %s (known: {ignition_url}, {nocloud_url}, {node})", file, field, ph))
			}
		}
		if isURL {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("%s: %s: %q is not an http or https URL", file, field, v))
			}
		}
	}
	check("kernel", p.Kernel, true)
	for i, v := range p.Initrd {
		check(fmt.Sprintf("initrd[%d]", i), v, true)
	}
	for i, v := range p.Args {
		check(fmt.Sprintf("args[%d]", i), v, false)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// bootScript is /boot.ipxe: it sends the machine on to /ipxe with what
// iPXE knows of it. The relative URL resolves against the script's own.
const bootScript = "#!ipxe\n" +
	"chain ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}&hostname=${hostname:uristring}\n"

// script is the machine's /ipxe script.
func (p *BootProfile) script(vars map[string]string) []byte {
	expand := func(s string) string {
		return placeholder.ReplaceAllStringFunc(s, func(ph string) string { return vars[ph] })
	}
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	b.WriteString("kernel " + expand(p.Kernel))
	for _, a := range p.Args {
		b.WriteString(" " + expand(a))
	}
	b.WriteString("\n")
	for _, i := range p.Initrd {
		b.WriteString("initrd " + expand(i) + "\n")
	}
	b.WriteString("boot\n")
	return []byte(b.String())
}
