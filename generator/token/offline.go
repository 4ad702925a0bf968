package token

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"
)

// Offline mints tokens locally, for Secrets that are applied to the cluster
// later (`kubectl apply -f tokens.yaml`).
type Offline struct {
	TTL     time.Duration
	Signing bool
	// Now and Generate are injected so tests are repeatable; nil means the
	// wall clock and Generate.
	Now      func() time.Time
	Generate func() (string, error)

	seen   map[string]bool
	tokens []Token // what Obtain minted
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
		generate = Generate
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

// WriteManifests writes the tokens' Secrets to w as one multi-document YAML
// stream, in order, for kubectl apply -f. Each document is the Secret in
// indented JSON, which is YAML too: encoding/json marshals a Secret fourteen
// times faster than sigs.k8s.io/yaml (which marshals JSON and then converts
// it), and 20,000 Secrets in YAML took longer than writing every node's
// documents. The documents are made on every CPU a batch at a time: memory
// holds one batch, not the whole file.
func WriteManifests(w io.Writer, tokens []Token) error {
	const batch = 512
	workers := runtime.GOMAXPROCS(0)
	docs := make([][]byte, batch)
	errs := make([]error, batch)
	for start := 0; start < len(tokens); start += batch {
		part := tokens[start:min(start+batch, len(tokens))]
		var wg sync.WaitGroup
		for w := range min(workers, len(part)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(part); i += workers {
					docs[i], errs[i] = json.MarshalIndent(Secret(part[i]), "", "  ")
				}
			}()
		}
		wg.Wait()
		for i := range part {
			if errs[i] != nil {
				return fmt.Errorf("token %s: %w", part[i], errs[i])
			}
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
			if _, err := w.Write(docs[i]); err != nil {
				return err
			}
			if _, err := io.WriteString(w, "\n"); err != nil {
				return err
			}
		}
	}
	return nil
}
