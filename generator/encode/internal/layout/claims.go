package layout

import (
	"path"

	"github.com/kubestrap/kubestrap/generator/render"
)

// Claims are the paths kubestrap writes on a node and the directories that
// hold them: what a user's addition (a Butane snippet, a cloud-config) may
// not replace. Both documents' merges check against the same rules.
type Claims struct {
	paths   map[string]bool
	parents map[string]string // a directory → a claimed path under it
}

// NewClaims claims paths, cleaned, and render.HostnamePath, which is
// kubestrap's on every node whether or not its Assets write it: the node's
// name is the kubelet's identity.
func NewClaims(paths ...string) Claims {
	c := Claims{paths: make(map[string]bool, len(paths)+1), parents: map[string]string{}}
	for _, p := range append([]string{render.HostnamePath}, paths...) {
		p = path.Clean(p)
		c.paths[p] = true
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := c.parents[d]; ok {
				break
			}
			c.parents[d] = p
		}
	}
	return c
}

// Claimed reports whether kubestrap writes p.
func (c Claims) Claimed(p string) bool { return c.paths[path.Clean(p)] }

// Holds returns a claimed path under the directory dir, if any: a file or
// link at dir would replace it.
func (c Claims) Holds(dir string) (string, bool) {
	p, ok := c.parents[path.Clean(dir)]
	return p, ok
}
