package token

import (
	"bytes"
	"fmt"
	"time"

	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"sigs.k8s.io/yaml"
)

// Offline mints tokens locally, for Secrets that are applied to the cluster
// later (`kubectl apply -f tokens.yaml`).
type Offline struct {
	TTL     time.Duration
	Signing bool
	// Now and Generate are injected so tests are repeatable; nil means the
	// wall clock and cluster-bootstrap's crypto/rand generator.
	Now      func() time.Time
	Generate func() (string, error)

	seen map[string]bool
}

// maxTries bounds retries on an id collision, which at 36^6 ids is rare
// enough that hitting the bound means the generator is broken.
const maxTries = 16

// Mint returns a new token for node, with an id unused by this Offline.
func (o *Offline) Mint(node string) (Token, error) {
	now, generate := o.Now, o.Generate
	if now == nil {
		now = time.Now
	}
	if generate == nil {
		generate = bootstraputil.GenerateBootstrapToken
	}
	if o.seen == nil {
		o.seen = map[string]bool{}
	}
	for range maxTries {
		value, err := generate()
		if err != nil {
			return Token{}, fmt.Errorf("generating a token for node %q: %w", node, err)
		}
		t, err := New(value, node, now().Add(o.TTL).UTC().Truncate(time.Second), o.Signing)
		if err != nil {
			return Token{}, fmt.Errorf("generating a token for node %q: %w", node, err)
		}
		if o.seen[t.ID] {
			continue
		}
		o.seen[t.ID] = true
		return t, nil
	}
	return Token{}, fmt.Errorf("generating a token for node %q: %d id collisions in a row", node, maxTries)
}

// Manifests renders the tokens' Secrets as one multi-document YAML stream.
func Manifests(tokens []Token) ([]byte, error) {
	var buf bytes.Buffer
	for _, t := range tokens {
		doc, err := yaml.Marshal(Secret(t))
		if err != nil {
			return nil, fmt.Errorf("token %s: %w", t, err)
		}
		buf.WriteString("---\n")
		buf.Write(doc)
	}
	return buf.Bytes(), nil
}
