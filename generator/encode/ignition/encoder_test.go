package ignition

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// node returns the sample's assets as node i would have them: its own name
// in the unit and its own token in the kubeconfig, as render makes them.
func node(i int) render.Assets {
	a := sample.Assets()
	name := fmt.Sprintf("kube-node%d", i)
	a.Node = name
	a.Units[0].Contents = []byte(strings.ReplaceAll(sample.KubeletUnit, "kube-node1", name))
	a.Files[1].Contents = []byte(strings.ReplaceAll(sample.Kubeconfig, sample.Token, fmt.Sprintf("%06d.%016d", i, i)))
	return a
}

// encodeAll encodes nodes on several goroutines at once, as the generate
// command does, and compares every result with Encode's.
func encodeAll(t *testing.T, e *Encoder, o Options, nodes []render.Assets) {
	t.Helper()
	var wg sync.WaitGroup
	for _, a := range nodes {
		wg.Go(func() {
			got, warnings, err := e.Encode(a)
			want, wantErr := Encode(a, o)
			switch {
			case err != nil || wantErr != nil:
				t.Errorf("node %s: Encoder: %v; Encode: %v", a.Node, err, wantErr)
			case !bytes.Equal(got, want.Ignition):
				t.Errorf("node %s: the Encoder differs from Encode:\n%s", a.Node, firstDiff(got, want.Ignition))
			case len(warnings) != len(want.Warnings):
				t.Errorf("node %s: warnings %q, Encode has %q", a.Node, warnings, want.Warnings)
			}
		})
	}
	wg.Wait()
}

func TestEncoder(t *testing.T) {
	for _, o := range []Options{{}, {VariantFlatcar, ""}} {
		e, err := NewEncoder(o)
		if err != nil {
			t.Fatal(err)
		}
		var nodes []render.Assets
		for i := range 16 {
			nodes = append(nodes, node(i))
		}
		// Whichever comes first makes the template, while the others wait.
		encodeAll(t, e, o, nodes)
		if e.tmpl == nil {
			t.Errorf("%+v: the Encoder made no template", o)
		}
		// Another shape (a file that is not text) takes Butane's path,
		// alongside nodes that fit the template.
		other := node(99)
		other.Files[2].Contents = []byte{0xff, 0xfe, 0}
		encodeAll(t, e, o, []render.Assets{other, sample.TrickyAssets(), node(100), node(101)})
		bu, err := e.Butane(nodes[3])
		if want, _ := Butane(nodes[3], o); err != nil || !bytes.Equal(bu, want) {
			t.Errorf("%+v: Encoder.Butane differs from Butane: %v", o, err)
		}
	}
}

// When the first node has no template, every node takes Butane's path.
func TestEncoderFirstHasNoTemplate(t *testing.T) {
	e, err := NewEncoder(Options{})
	if err != nil {
		t.Fatal(err)
	}
	encodeAll(t, e, Options{}, []render.Assets{sample.TrickyAssets()})
	encodeAll(t, e, Options{}, []render.Assets{node(1), node(2), node(3)})
	if e.tmpl != nil {
		t.Error("the Encoder made a template from assets that have none")
	}
}

// When the template refuses Butane's behaviour or the options, every node
// takes Butane's path, with the Encoder's options.
func TestEncoderFallsBackWhenUnsafe(t *testing.T) {
	e, err := NewEncoder(Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.topts.Pretty = false
	for i := range 3 {
		a := node(i)
		got, _, err := e.Encode(a)
		if err != nil {
			t.Fatal(err)
		}
		want, err := encode(a, e.opts, e.topts)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Ignition) {
			t.Errorf("node %d: differs from Butane's output:\n%s", i, firstDiff(got, want.Ignition))
		}
	}
	if e.tmpl != nil {
		t.Error("the Encoder made a template with options the template refuses")
	}
}

// A first node that Butane rejects gets the error; the nodes after it are
// encoded (or rejected) on their own.
func TestEncoderFirstInvalid(t *testing.T) {
	e, err := NewEncoder(Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad := node(1)
	bad.Files[0].Path = "etc/relative"
	if _, _, err := e.Encode(bad); !errors.Is(err, ErrInvalidGenerated) {
		t.Errorf("first node: %v, want ErrInvalidGenerated", err)
	}
	if _, _, err := e.Encode(bad); !errors.Is(err, ErrInvalidGenerated) || !strings.Contains(err.Error(), "not absolute") {
		t.Errorf("same node again: %v", err)
	}
	encodeAll(t, e, Options{}, []render.Assets{node(2), node(3)})
	badUnit := node(4)
	badUnit.Units[0].Contents = []byte("[Service\n")
	if _, _, err := e.Encode(badUnit); !errors.Is(err, ErrInvalidGenerated) {
		t.Errorf("broken unit: %v, want ErrInvalidGenerated", err)
	}
}

func TestNewEncoderChecksOptions(t *testing.T) {
	if _, err := NewEncoder(Options{Variant: "rhcos"}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewEncoder = %v, want ErrInvalidOptions", err)
	}
}

// An Encoder with a template must not be slower than the Template alone by
// more than its bookkeeping.
func BenchmarkEncoder(b *testing.B) {
	e, err := NewEncoder(Options{})
	if err != nil {
		b.Fatal(err)
	}
	nodes := []render.Assets{node(1), node(2)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := e.Encode(nodes[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
