package main

import (
	"context"
	"errors"
	"fmt"
	"path"
	"runtime"
	"sync"

	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/output"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/generator/token"
)

// ignitionEncoder encodes nodes through a Template made from the first node
// (every node of a run has one shape), and through Butane for any node whose
// assets do not fit it.
type ignitionEncoder struct {
	opts ignition.Options
	once sync.Once
	tmpl *ignition.Template
	err  error
}

func (e *ignitionEncoder) encode(a render.Assets) ([]byte, []string, error) {
	// The first node to get here makes the template; the others wait for it.
	e.once.Do(func() {
		e.tmpl, e.err = ignition.NewTemplate(a, e.opts)
		if errors.Is(e.err, ignition.ErrShape) {
			e.err = nil
		}
	})
	if e.err != nil {
		return nil, nil, e.err
	}
	if e.tmpl != nil {
		ign, warnings, err := e.tmpl.Fill(a)
		if !errors.Is(err, ignition.ErrShape) {
			return ign, warnings, err
		}
	}
	res, err := ignition.Encode(a, e.opts)
	return res.Ignition, res.Warnings, err
}

// writeNodes renders, encodes and writes each node whose index comes on
// ready (its token is then in toks), on as many workers as there are CPUs,
// until ready is closed. Each node's documents are written as soon as they
// are made, so memory does not grow with the node count. It returns the
// summary rows in node order and the encoders' warnings, each with how many
// nodes had it.
func writeNodes(ctx context.Context, r *render.Renderer, nodes []model.Node, toks []token.Token, ready <-chan int, o generateOptions, stage *output.Stage) ([]summaryRow, map[string]int, error) {
	enc := &ignitionEncoder{opts: o.ign}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rows := make([]summaryRow, len(nodes))
	warnings := map[string]int{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	worker := func() {
		defer wg.Done()
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
			row, ws, err := writeNode(r, nodes[i], toks[i], enc, o, stage)
			if err != nil {
				cancel(err)
				return
			}
			rows[i] = row
			if len(ws) > 0 {
				mu.Lock()
				for _, w := range ws {
					warnings[w]++
				}
				mu.Unlock()
			}
		}
	}
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go worker()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, nil, err
	}
	return rows, warnings, nil
}

func writeNode(r *render.Renderer, n model.Node, tok token.Token, enc *ignitionEncoder, o generateOptions, stage *output.Stage) (summaryRow, []string, error) {
	assets, err := r.Node(n, tok)
	if err != nil {
		return summaryRow{}, nil, err
	}
	files, warnings, err := nodeDocuments(assets, enc, o)
	if err != nil {
		return summaryRow{}, nil, err
	}
	row := summaryRow{node: n.Name, tokenID: tok.ID}
	for _, f := range files {
		if err := stage.WriteFile(path.Join(n.Name, f.name), f.data, secretMode); err != nil {
			return summaryRow{}, nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		row.files = append(row.files, f.name)
	}
	return row, warnings, nil
}
