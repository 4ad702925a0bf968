package ignition

import (
	"errors"
	"sync"

	butanecommon "github.com/coreos/butane/config/common"

	"github.com/kubestrap/kubestrap/generator/render"
)

// Encoder encodes the nodes of one run, whose Assets normally share one
// shape, through a Template made from the first node it is given, and
// through Butane (Encode) for any node the Template does not fit. It gives
// the same bytes as Encode for every node, and is safe for concurrent use.
type Encoder struct {
	opts resolved
	// topts are the translate options of every translation the Encoder
	// has made: translateOptions(), except in tests that show what happens
	// when the Template refuses them.
	topts butanecommon.TranslateBytesOptions

	once sync.Once
	tmpl *Template // nil if the first node's Assets made none
}

// NewEncoder returns an Encoder for o, which is checked first: errors wrap
// ErrInvalidOptions.
func NewEncoder(o Options) (*Encoder, error) {
	r, err := o.resolve()
	if err != nil {
		return nil, err
	}
	return &Encoder{opts: r, topts: translateOptions()}, nil
}

// Encode returns a's Ignition config and the warnings Butane's and
// Ignition's validators have for it, as Encode does (though the warnings of
// a node encoded by the Template are worded after Ignition's validators, not
// Butane's). Errors wrap ErrInvalidGenerated.
//
// The first call makes the Template, and concurrent calls wait for it. If
// that fails with ErrShape (the first node has contents that are not text)
// or ErrTemplateUnsafe (Butane does not behave as the Template assumes),
// every node goes through Butane. Any other failure means Butane or
// Ignition rejected the first node's paths, modes or unit names, or a bug in
// the Template: that call returns the error, and later nodes go through
// Butane, which reports their own errors.
func (e *Encoder) Encode(a render.Assets) (ign []byte, warnings []string, err error) {
	if a, err = lower(a, e.opts.variant); err != nil {
		return nil, nil, err
	}
	e.once.Do(func() {
		var tmplErr error
		e.tmpl, tmplErr = newTemplate(a, e.opts, e.topts)
		if !errors.Is(tmplErr, ErrShape) && !errors.Is(tmplErr, ErrTemplateUnsafe) {
			err = tmplErr
		}
	})
	if err != nil {
		return nil, nil, err
	}
	if e.tmpl != nil {
		ign, warnings, err := e.tmpl.Fill(a)
		if !errors.Is(err, ErrShape) {
			return ign, warnings, err
		}
	}
	res, err := encode(a, e.opts, e.topts)
	if err != nil {
		return nil, nil, err
	}
	return res.Ignition, res.Warnings, nil
}

// Butane returns a's Butane source, the config.bu its Ignition config is
// translated from, as Butane does. Errors wrap ErrInvalidGenerated.
func (e *Encoder) Butane(a render.Assets) ([]byte, error) {
	a, err := lower(a, e.opts.variant)
	if err != nil {
		return nil, err
	}
	return butaneSource(a, e.opts)
}
