package model

import (
	"strings"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
)

// maxSerial bounds a serial number: SMBIOS strings are short, and the value
// travels in a URL query.
const maxSerial = 64

// identity checks what identifies the machine besides its MAC, in the form
// `serve` matches: a UUID lowercase with hyphens (iPXE's ${uuid}), a serial
// as printable ASCII without spaces, a hostname as a DNS name in lowercase.
// Each must be unique: two nodes answering to one machine would hand one
// machine either node's token.
func (nc *nodeChecker) identity(i int, p string, n *Node) {
	if nc.ids == nil {
		nc.ids = map[string]map[string]int{"uuid": {}, "serial": {}, "hostname": {}}
	}
	if n.UUID != "" {
		f := p + ".uuid"
		u, err := uuid.Parse(n.UUID)
		if err != nil || len(n.UUID) != 36 {
			nc.r.addf(f, "%s is not a UUID like 4c4c4544-0037-3010-8030-b7c04f4e4e32", quote(n.UUID))
		} else if u == uuid.Nil || u == uuid.Max {
			// What firmware reports when it has no UUID: every such
			// machine would be this node.
			nc.r.addf(f, "%s is the UUID firmware reports when it has none: it names no one machine", quote(n.UUID))
		} else {
			n.UUID = u.String()
			nc.unique(i, f, "uuid", n.UUID)
		}
	}
	if n.Serial != "" {
		f := p + ".serial"
		if len(n.Serial) > maxSerial || strings.IndexFunc(n.Serial, func(c rune) bool { return c <= ' ' || c > '~' }) >= 0 {
			nc.r.addf(f, "%s is not a serial number: at most %d printable ASCII characters without spaces", quote(n.Serial), maxSerial)
		} else {
			nc.unique(i, f, "serial", n.Serial)
		}
	}
	if n.Hostname != "" {
		f := p + ".hostname"
		h := strings.ToLower(strings.TrimSuffix(n.Hostname, "."))
		if errs := validation.IsDNS1123Subdomain(h); len(errs) > 0 {
			nc.r.addf(f, "%s is not a host name: %s", quote(n.Hostname), strings.Join(errs, "; "))
		} else {
			n.Hostname = h
			nc.unique(i, f, "hostname", h)
		}
	}
}

func (nc *nodeChecker) unique(i int, f, field, v string) {
	if j, dup := nc.ids[field][v]; dup {
		nc.r.addf(f, "duplicate %s %s (first used by %s)", field, quote(v), nc.first(j, field))
		return
	}
	nc.ids[field][v] = i
}
