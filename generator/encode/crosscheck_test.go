// The cross-check lives above both encoders: it reads the two documents back
// independently and compares what each would do to a node.
package encode_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// TestDocumentsAgree derives the (kind, path, mode, owner) set, the contents
// and the enabled units from each document alone and requires them equal,
// for every Ignition variant/version kubestrap accepts.
func TestDocumentsAgree(t *testing.T) {
	inputs := []struct {
		name   string
		assets render.Assets
	}{
		{"sample", sample.Assets()},
		{"tricky", sample.TrickyAssets()},
	}
	opts := []ignition.Options{
		{Variant: "fcos", Version: "1.4.0"},
		{Variant: "fcos", Version: "1.5.0"},
		{Variant: "fcos", Version: "1.6.0"},
		{Variant: "fcos", Version: "1.7.0"},
		{Variant: "flatcar", Version: "1.0.0"},
		{Variant: "flatcar", Version: "1.1.0"},
	}
	for _, in := range inputs {
		ud, err := cloudinit.UserData(in.assets)
		if err != nil {
			t.Fatal(err)
		}
		ci, err := parseback.CloudInit(ud)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range opts {
			t.Run(in.name+"/"+o.Variant+"-"+o.Version, func(t *testing.T) {
				res, err := ignition.Encode(in.assets, o)
				if err != nil {
					t.Fatal(err)
				}
				ign, err := parseback.Ignition(res.Ignition)
				if err != nil {
					t.Fatal(err)
				}
				compare(t, ign, ci)
			})
		}
	}
}

func compare(t *testing.T, ign, ci parseback.Doc) {
	t.Helper()
	ik, ck := ign.Keys(), ci.Keys()
	for _, k := range ik {
		if _, found := slices.BinarySearch(ck, k); !found {
			t.Errorf("only Ignition creates %s", k)
		}
	}
	for _, k := range ck {
		if _, found := slices.BinarySearch(ik, k); !found {
			t.Errorf("only cloud-init creates %s", k)
		}
	}
	if len(ik) == 0 {
		t.Error("documents create nothing; the comparison is vacuous")
	}
	for _, e := range ign.Entries {
		c, ok := ci.Lookup(e.Path)
		if ok && !bytes.Equal(e.Contents, c.Contents) {
			t.Errorf("%s: contents differ:\nIgnition   %q\ncloud-init %q", e.Path, e.Contents, c.Contents)
		}
	}
	if !slices.Equal(ign.Enabled, ci.Enabled) || len(ign.Enabled) == 0 {
		t.Errorf("enabled units: Ignition %q, cloud-init %q", ign.Enabled, ci.Enabled)
	}
}
