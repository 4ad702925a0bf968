package serve

import (
	"encoding/hex"
	"net"
	"net/url"
	"strings"

	"github.com/google/uuid"

	"github.com/kubestrap/kubestrap/generator/model"
)

// Keys a machine is matched by, as query parameters.
const (
	keyMAC      = "mac"
	keyUUID     = "uuid"
	keySerial   = "serial"
	keyHostname = "hostname"
)

var matchKeys = []string{keyMAC, keyUUID, keySerial, keyHostname}

// index finds a node by what its machine says of itself.
type index struct {
	byKey map[string]map[string]int // key → normalized value → node
}

func newIndex(nodes []model.Node) *index {
	ix := &index{byKey: map[string]map[string]int{}}
	for _, k := range matchKeys {
		ix.byKey[k] = map[string]int{}
	}
	for i, n := range nodes {
		// model.Load normalized each and kept it unique.
		for k, v := range map[string]string{keyMAC: n.MAC, keyUUID: n.UUID, keySerial: n.Serial, keyHostname: n.Hostname} {
			if v != "" {
				ix.byKey[k][v] = i
			}
		}
		if n.Network != nil && n.Network.MAC != "" && n.Network.MAC != n.MAC {
			ix.byKey[keyMAC][n.Network.MAC] = i
		}
	}
	return ix
}

// normalize puts a machine's value in the node list's form; ok is false
// for a value that cannot be one.
func normalize(key, v string) (string, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 256 {
		return "", false
	}
	switch key {
	case keyMAC:
		return normalizeMAC(v)
	case keyUUID:
		u, err := uuid.Parse(v)
		if err != nil {
			return "", false
		}
		return u.String(), true
	case keyHostname:
		return strings.ToLower(strings.TrimSuffix(v, ".")), true
	}
	return v, true
}

// normalizeMAC takes any common notation: 52:54:00:12:34:56, 52-54-00-…
// (iPXE's ${mac:hexhyp}), 5254.0012.3456 and 525400123456.
func normalizeMAC(v string) (string, bool) {
	if len(v) == 12 {
		b, err := hex.DecodeString(v)
		if err != nil {
			return "", false
		}
		return net.HardwareAddr(b).String(), true
	}
	hw, err := net.ParseMAC(v)
	if err != nil || len(hw) != 6 {
		return "", false
	}
	return hw.String(), true
}

// match finds the node the query names. Every key given that the node list
// knows must name the same node (a MAC of one node and a UUID of another is
// no machine of ours); values the list does not know are ignored, since
// firmware fills in what it has (a VM's serial "Not Specified").
// which is the key and value that matched first, for the URLs the node is
// sent on to.
func (ix *index) match(q url.Values) (node int, which [2]string, why string) {
	node = -1
	for _, k := range matchKeys {
		for _, raw := range q[k] {
			v, ok := normalize(k, raw)
			if !ok {
				continue
			}
			i, found := ix.byKey[k][v]
			if !found {
				continue
			}
			if node >= 0 && i != node {
				return -1, which, "the machine's " + which[0] + " and " + k + " name different nodes"
			}
			if node < 0 {
				node, which = i, [2]string{k, v}
			}
		}
	}
	if node < 0 {
		return -1, which, "no node matches"
	}
	return node, which, ""
}

// matchSegment finds the node a path segment names (the NoCloud URL's
// /nocloud/<mac>/): a MAC, or else a UUID, serial or hostname.
func (ix *index) matchSegment(seg string) (int, [2]string, string) {
	q := url.Values{}
	for _, k := range matchKeys {
		q.Set(k, seg)
	}
	// A segment that parses as a MAC is one; it is not also tried as a
	// serial of another node.
	if v, ok := normalizeMAC(seg); ok {
		if i, found := ix.byKey[keyMAC][v]; found {
			return i, [2]string{keyMAC, v}, ""
		}
	}
	q.Del(keyMAC)
	return ix.match(q)
}
