// Package pipeline is kubestrap's one way from a validated cluster to each
// node's first-boot documents: the node's token, the files its boot lays
// down (render), the documents that carry them (encode), and where they go
// (a Sink). `generate` runs it over a whole node list with Run; a server
// answering one machine calls Node.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sync"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/generator/token"
)

// Document is one of a node's documents.
type Document struct {
	// Name is the document's file name in the NoCloud and directory
	// layouts: one of the names below.
	Name string
	Data []byte
}

// Document names.
const (
	IgnitionName = "config.ign"
	ButaneName   = "config.bu"
	UserDataName = "user-data"
	MetaDataName = "meta-data"
	// NetworkConfigName is a static network's NoCloud network-config.
	NetworkConfigName = "network-config"
	// TokensName is the file of the Secrets of tokens minted offline.
	TokensName = "tokens.yaml"
)

// Encoder turns one node's files into documents. It must be safe for
// concurrent use: nodes are encoded on every CPU.
type Encoder interface {
	Encode(a render.Assets) (docs []Document, warnings []string, err error)
}

// Sink receives a run's documents and makes them visible all at once.
type Sink interface {
	// Node stores one node's documents; it is called concurrently, once
	// per node.
	Node(name string, docs []Document) error
	// File stores a file of the whole run, written by write.
	File(name string, write func(io.Writer) error) error
	// Commit makes everything stored visible together. warnings are for
	// trouble after that point, which does not undo the run.
	Commit() (warnings []string, err error)
	// Abort discards everything stored.
	Abort() error
}

// Pipeline renders and encodes the nodes of one cluster.
type Pipeline struct {
	renderer *render.Renderer
	encoders []Encoder
	// Workers is how many nodes are rendered and encoded at once; zero
	// means one per CPU.
	Workers int
	// Progress, if set, is called (serialised) after each node's documents
	// are stored, with how many are.
	Progress func(done int)
}

// New prepares the pipeline for a validated cluster (model.Load's).
func New(c *model.Cluster, encoders ...Encoder) (*Pipeline, error) {
	if len(encoders) == 0 {
		return nil, errors.New("pipeline: no encoder")
	}
	r, err := render.New(c)
	if err != nil {
		return nil, err
	}
	return &Pipeline{renderer: r, encoders: encoders}, nil
}

// Node renders n with tok and encodes it with every encoder, in order.
func (p *Pipeline) Node(n model.Node, tok token.Token) ([]Document, []string, error) {
	a, err := p.renderer.Node(n, tok)
	if err != nil {
		return nil, nil, err
	}
	var (
		docs     []Document
		warnings []string
	)
	for _, e := range p.encoders {
		d, w, err := e.Encode(a)
		if err != nil {
			return nil, nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		docs = append(docs, d...)
		warnings = append(warnings, w...)
	}
	return docs, warnings, nil
}

// Result is what a successful Run did.
type Result struct {
	// Nodes are in the order given.
	Nodes  []NodeResult
	Tokens token.Summary
	// Warnings are the encoders' and the sink's, each once, with how many
	// nodes had it (0 for the run's own), sorted.
	Warnings []Warning
}

// NodeResult is one node's line of a run: never its token secret.
type NodeResult struct {
	Name, TokenID string
	Documents     []string
}

// Warning is a warning and how many nodes had it.
type Warning struct {
	Text  string
	Nodes int
}

// Run obtains a token for every node, writes each node's documents to sink
// as soon as its token is there, and then commits the sink and then the
// tokens. All or nothing: on any failure the sink is aborted and the tokens
// the run created are rolled back, so no document exists without its token
// and no token without its document. A failure to commit the tokens after
// the documents are visible is a warning: the documents work.
func (p *Pipeline) Run(ctx context.Context, nodes []model.Node, tokens token.Provider, sink Sink) (res *Result, err error) {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// The channel has room for every node, so ready never blocks Obtain.
	ready := make(chan int, len(nodes))
	toks := make([]token.Token, len(nodes))
	var (
		summary   token.Summary
		obtainErr error
		obtained  = make(chan struct{})
		// manifested is closed when the tokens' own file is written, if
		// the provider has one: it is written beside the nodes' documents,
		// once every token is there.
		manifested = make(chan struct{})
	)
	go func() {
		defer close(obtained)
		defer close(ready)
		summary, obtainErr = tokens.Obtain(ctx, names, func(i int, t token.Token) {
			toks[i] = t
			ready <- i
		})
		if obtainErr != nil {
			cancel(obtainErr)
		}
	}()
	go func() {
		defer close(manifested)
		m, ok := tokens.(token.Manifester)
		if !ok {
			return
		}
		<-obtained
		if obtainErr != nil {
			return
		}
		if err := sink.File(TokensName, m.Manifests); err != nil {
			cancel(fmt.Errorf("%s: %w", TokensName, err))
		}
	}()
	rows, warnings := p.write(ctx, cancel, nodes, toks, ready, sink)
	<-obtained
	<-manifested

	defer func() {
		if err == nil {
			return
		}
		if aerr := sink.Abort(); aerr != nil {
			err = errors.Join(err, fmt.Errorf("removing the unfinished output: %w", aerr))
		}
		// A failed Obtain has undone itself; the provider knows.
		if rerr := tokens.Rollback(context.WithoutCancel(ctx)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the run's tokens: %w", rerr))
		}
	}()
	if cause := context.Cause(ctx); cause != nil {
		// The first failure: a node's documents, the tokens, or ctx's own.
		return nil, cause
	}
	for i, row := range rows {
		if row.Name == "" {
			return nil, fmt.Errorf("no documents for node %s: the token provider never handed over its token", nodes[i].Name)
		}
	}
	commitWarnings, err := sink.Commit()
	if err != nil {
		return nil, err
	}
	// The run's own warnings are listed with no node count.
	for _, w := range commitWarnings {
		warnings[w] += 0
	}
	// The documents are visible: from here on the tokens stay, whatever
	// else goes wrong.
	if err := tokens.Commit(context.WithoutCancel(ctx)); err != nil {
		warnings[err.Error()] += 0
	}
	res = &Result{Nodes: rows, Tokens: summary}
	for _, w := range slices.Sorted(maps.Keys(warnings)) {
		res.Warnings = append(res.Warnings, Warning{Text: w, Nodes: warnings[w]})
	}
	return res, nil
}

// write renders, encodes and stores each node whose index comes on ready
// (its token is then in toks) until ready is closed or ctx ends, on
// Workers goroutines; the first failure cancels ctx with its cause.
// Documents are stored as soon as they are made, so memory does not grow
// with the node count.
func (p *Pipeline) write(ctx context.Context, cancel context.CancelCauseFunc, nodes []model.Node, toks []token.Token, ready <-chan int, sink Sink) ([]NodeResult, map[string]int) {
	rows := make([]NodeResult, len(nodes))
	warnings := map[string]int{}
	var (
		mu   sync.Mutex
		done int
		wg   sync.WaitGroup
	)
	workers := p.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	for range workers {
		wg.Go(func() {
			for {
				var i int
				select {
				case <-ctx.Done():
					return
				case next, ok := <-ready:
					if !ok {
						return
					}
					i = next
				}
				n := nodes[i]
				docs, ws, err := p.Node(n, toks[i])
				if err == nil {
					if err = sink.Node(n.Name, docs); err != nil {
						err = fmt.Errorf("node %s: %w", n.Name, err)
					}
				}
				if err != nil {
					cancel(err)
					return
				}
				row := NodeResult{Name: n.Name, TokenID: toks[i].ID}
				for _, d := range docs {
					row.Documents = append(row.Documents, d.Name)
				}
				rows[i] = row
				mu.Lock()
				for _, w := range ws {
					warnings[w]++
				}
				done++
				if p.Progress != nil {
					p.Progress(done)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return rows, warnings
}
