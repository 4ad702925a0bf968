package token

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Provider is where one run's tokens come from, and what ends the run
// either way. A Provider serves a single run: Obtain once, then Commit
// after the documents holding the tokens are written, or Rollback.
type Provider interface {
	// Obtain gets one token per node, calling ready with each node's index
	// and token as soon as it is there (calls are serialised), so the
	// caller can write that node's documents while others are still on
	// their way. All or nothing: when Obtain fails, whatever it created is
	// already undone.
	Obtain(ctx context.Context, nodes []string, ready func(i int, t Token)) (Summary, error)
	// Commit makes the tokens the documents hold the ones a later run may
	// reuse, and retires those they replace.
	Commit(ctx context.Context) error
	// Rollback undoes what a successful Obtain did, for a run that failed
	// after it.
	Rollback(ctx context.Context) error
}

// Summary says what Obtain did.
type Summary struct {
	Created, Reused int
}

// Manifester is a Provider whose tokens travel with the documents: offline
// tokens exist only as the Secrets it writes, for a later kubectl apply.
type Manifester interface {
	Manifests(w io.Writer) error
}

// DefaultReuseMargin is how long a node's existing token must stay valid to
// be reused when no margin is given: half its lifetime, at most two hours.
// A fixed two hours would make every token shorter than that unreusable, so
// each re-run would mint another and leave the last one valid.
func DefaultReuseMargin(ttl time.Duration) time.Duration {
	return min(ttl/2, 2*time.Hour)
}

// CheckReuseMargin refuses a margin no token of this lifetime can meet.
func CheckReuseMargin(margin, ttl time.Duration) error {
	switch {
	case margin < 0:
		return fmt.Errorf("reuse margin %v is negative", margin)
	case margin >= ttl:
		return fmt.Errorf("reuse margin %v is not shorter than the token TTL %v: no token could ever be reused", margin, ttl)
	}
	return nil
}

// Obtain mints one token per node, all of them at once: nothing can fail
// half-way but the random source.
func (o *Offline) Obtain(_ context.Context, nodes []string, ready func(int, Token)) (Summary, error) {
	o.tokens = make([]Token, 0, len(nodes))
	for i, n := range nodes {
		tok, err := o.Mint(n)
		if err != nil {
			o.tokens = nil
			return Summary{}, err
		}
		o.tokens = append(o.tokens, tok)
		if ready != nil {
			ready(i, tok)
		}
	}
	return Summary{Created: len(nodes)}, nil
}

// Commit does nothing: offline tokens exist once their Secrets are applied.
func (o *Offline) Commit(context.Context) error { return nil }

// Rollback forgets the tokens; nothing of them exists outside this process.
func (o *Offline) Rollback(context.Context) error {
	o.tokens = nil
	return nil
}

// Manifests writes the Secrets of the tokens Obtain minted, in node order.
func (o *Offline) Manifests(w io.Writer) error { return WriteManifests(w, o.tokens) }
