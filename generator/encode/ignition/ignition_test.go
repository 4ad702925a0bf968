package ignition_test

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ignconfig "github.com/coreos/ignition/v2/config"
	"gopkg.in/yaml.v3"

	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// combos are the variant/version pairs DESIGN.md names plus the edges of the
// accepted range, with the Ignition spec each must produce.
var combos = []struct {
	opts ignition.Options
	spec string
}{
	{ignition.Options{}, "3.5.0"},
	{ignition.Options{Variant: "fcos", Version: "1.4.0"}, "3.3.0"},
	{ignition.Options{Variant: "fcos", Version: "1.5.0"}, "3.4.0"},
	{ignition.Options{Variant: "fcos", Version: "1.6.0"}, "3.5.0"},
	{ignition.Options{Variant: "fcos", Version: "1.6"}, "3.5.0"},
	{ignition.Options{Variant: "fcos", Version: "1.7.0"}, "3.6.0"},
	{ignition.Options{Variant: "flatcar"}, "3.4.0"},
	{ignition.Options{Variant: "flatcar", Version: "1.0.0"}, "3.3.0"},
	{ignition.Options{Variant: "flatcar", Version: "1.1.0"}, "3.4.0"},
}

func name(o ignition.Options) string {
	return "variant=" + o.Variant + ",version=" + o.Version
}

func TestEncodeSample(t *testing.T) {
	a := sample.Assets()
	for _, c := range combos {
		t.Run(name(c.opts), func(t *testing.T) {
			if err := c.opts.Check(); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got := c.opts.IgnitionSpec(); got != c.spec {
				t.Errorf("IgnitionSpec() = %q, want %q", got, c.spec)
			}
			res, err := ignition.Encode(a, c.opts)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			// `butane --strict` fails on any report entry, so the sample
			// must produce none.
			if len(res.Warnings) > 0 {
				t.Errorf("unexpected warnings:\n%s", strings.Join(res.Warnings, "\n"))
			}
			doc, err := parseback.Ignition(res.Ignition)
			if err != nil {
				t.Fatal(err)
			}
			if doc.Spec != c.spec {
				t.Errorf("ignition.version = %q, want %q", doc.Spec, c.spec)
			}
			checkAssets(t, doc, a)
			checkButaneHeader(t, res.Butane, c.opts)
			checkOverwrite(t, res.Ignition)
		})
	}
}

// checkAssets compares what the document does with what a asks for.
func checkAssets(t *testing.T, doc parseback.Doc, a render.Assets) {
	t.Helper()
	for _, d := range parseback.Diff(doc, a) {
		t.Error(d)
	}
}

// checkOverwrite requires overwrite on every file, so that a file already on
// the node is replaced (as cloud-init does) instead of failing the boot, and
// on no directory, where it would delete the directory's contents.
func checkOverwrite(t *testing.T, raw []byte) {
	t.Helper()
	cfg, _, err := ignconfig.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range cfg.Storage.Files {
		if f.Overwrite == nil || !*f.Overwrite {
			t.Errorf("file %s: overwrite is not true", f.Path)
		}
	}
	for _, d := range cfg.Storage.Directories {
		if d.Overwrite != nil && *d.Overwrite {
			t.Errorf("directory %s: overwrite is true", d.Path)
		}
	}
}

func checkButaneHeader(t *testing.T, bu []byte, o ignition.Options) {
	t.Helper()
	var head struct{ Variant, Version string }
	if err := yaml.Unmarshal(bu, &head); err != nil {
		t.Fatalf("Butane source does not parse: %v", err)
	}
	wantVariant := o.Variant
	if wantVariant == "" {
		wantVariant = "fcos"
	}
	if head.Variant != wantVariant || strings.Count(head.Version, ".") != 2 ||
		(o.Version != "" && !strings.HasPrefix(head.Version, o.Version)) {
		t.Errorf("Butane header variant=%q version=%q for options %+v", head.Variant, head.Version, o)
	}
}

func TestButaneMatchesEncode(t *testing.T) {
	bu, err := ignition.Butane(sample.Assets(), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := ignition.Encode(sample.Assets(), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bu, res.Butane) {
		t.Errorf("Butane() and Encode().Butane differ")
	}
	// Modes are written in octal for people; yaml.v3 (Butane's parser) must
	// read them as octal too, which the decimal values in the Ignition
	// output confirm in TestEncodeSample.
	for _, m := range []string{"mode: 0644", "mode: 0600", "mode: 0700", "mode: 0755"} {
		if !bytes.Contains(bu, []byte(m)) {
			t.Errorf("Butane source lacks %q", m)
		}
	}
}

func TestBadOptions(t *testing.T) {
	tests := []struct {
		opts    ignition.Options
		mention string
	}{
		{ignition.Options{Variant: "rhcos"}, `"rhcos"`},
		{ignition.Options{Variant: "openshift", Version: "4.16.0"}, `"openshift"`},
		{ignition.Options{Variant: "FCOS"}, `"FCOS"`},
		{ignition.Options{Version: "9.9"}, `"9.9"`},
		{ignition.Options{Version: "1.8.0-experimental"}, `"1.8.0-experimental"`},
		{ignition.Options{Variant: "flatcar", Version: "1.2.0-experimental"}, `"1.2.0-experimental"`},
		{ignition.Options{Version: "1.3.0"}, `"1.3.0"`},
		{ignition.Options{Variant: "flatcar", Version: "1.6.0"}, `"1.6.0"`},
		{ignition.Options{Version: "v1.6.0"}, `"v1.6.0"`},
		{ignition.Options{Version: "1"}, `"1"`},
		{ignition.Options{Version: "1.6.0.0"}, `"1.6.0.0"`},
		{ignition.Options{Version: " 1.6.0"}, `" 1.6.0"`},
	}
	for _, tt := range tests {
		t.Run(name(tt.opts), func(t *testing.T) {
			err := tt.opts.Check()
			if !errors.Is(err, ignition.ErrInvalidOptions) {
				t.Fatalf("Check() = %v, want ErrInvalidOptions", err)
			}
			if errors.Is(err, ignition.ErrInvalidGenerated) {
				t.Errorf("a user error must not look like a kubestrap bug: %v", err)
			}
			msg := err.Error()
			// The message names what was wrong and lists what is accepted.
			for _, s := range []string{tt.mention, "fcos 1.4.0", "1.6.0 (Ignition 3.5.0, default)", "1.7.0", "flatcar 1.0.0", "1.1.0 (Ignition 3.4.0, default)", "experimental"} {
				if !strings.Contains(msg, s) {
					t.Errorf("message lacks %q: %s", s, msg)
				}
			}
			if got := tt.opts.IgnitionSpec(); got != "" {
				t.Errorf("IgnitionSpec() = %q for invalid options", got)
			}
			if _, err := ignition.Encode(sample.Assets(), tt.opts); !errors.Is(err, ignition.ErrInvalidOptions) {
				t.Errorf("Encode() = %v, want ErrInvalidOptions", err)
			}
			if _, err := ignition.Butane(sample.Assets(), tt.opts); !errors.Is(err, ignition.ErrInvalidOptions) {
				t.Errorf("Butane() = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestInvalidGenerated(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*render.Assets)
		mention string
	}{
		{"relative path", func(a *render.Assets) { a.Files[0].Path = "etc/x" }, "not absolute"},
		{"unclean path", func(a *render.Assets) { a.Dirs[0].Path = "/etc/kubernetes/" }, "not clean"},
		{"duplicate path", func(a *render.Assets) { a.Files[1].Path = a.Files[0].Path }, "already used"},
		{"file at unit path", func(a *render.Assets) { a.Files[0].Path = "/etc/systemd/system/kubelet.service" }, "already used"},
		{"unit without suffix", func(a *render.Assets) { a.Units[0].Name = "kubelet" }, "suffix"},
		{"unit name with slash", func(a *render.Assets) { a.Units[0].Name = "../kubelet.service" }, "plain unit file name"},
		{"type bits in mode", func(a *render.Assets) { a.Dirs[0].Mode = fs.ModeDir | 0o755 }, "type bits"},
		{"setuid", func(a *render.Assets) { a.Files[0].Mode = fs.ModeSetuid | 0o755 }, "setuid"},
		// Passes kubestrap's own checks, so this exercises the path where
		// Ignition's validator (run by Butane) rejects the output.
		{"unparsable unit", func(a *render.Assets) { a.Units[0].Contents = []byte("[Service\nExecStart=/bin/true\n") }, "invalid unit content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := sample.Assets()
			tt.modify(&a)
			_, err := ignition.Encode(a, ignition.Options{})
			if !errors.Is(err, ignition.ErrInvalidGenerated) {
				t.Fatalf("Encode() = %v, want ErrInvalidGenerated", err)
			}
			if errors.Is(err, ignition.ErrInvalidOptions) {
				t.Errorf("a kubestrap bug must not look like a user error: %v", err)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error lacks %q: %v", tt.mention, err)
			}
		})
	}
}

func TestWarningsAreReturned(t *testing.T) {
	a := sample.Assets()
	// Enabling a unit without [Install] does nothing, which Ignition reports
	// as a warning rather than an error.
	a.Units[0].Contents = []byte("[Service]\nExecStart=/bin/true\n")
	res, err := ignition.Encode(a, ignition.Options{})
	if err != nil {
		t.Fatalf("a warning must not fail Encode: %v", err)
	}
	// Butane's report already contains Ignition's validation, so the same
	// finding must not be listed twice.
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "no install section") {
		t.Errorf("Warnings = %q, want one about the missing install section", res.Warnings)
	}
}

// TestContentsRoundTrip feeds contents that YAML emitters and parsers are
// known to mangle through Butane and back out of the Ignition config.
func TestContentsRoundTrip(t *testing.T) {
	for _, c := range sample.TrickyContents() {
		t.Run(c.Name, func(t *testing.T) {
			a := sample.Assets()
			a.Files[0].Contents = []byte(c.Contents)
			res, err := ignition.Encode(a, ignition.Options{})
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			doc, err := parseback.Ignition(res.Ignition)
			if err != nil {
				t.Fatal(err)
			}
			if diffs := parseback.Diff(doc, a); len(diffs) > 0 {
				t.Errorf("%s\nButane source:\n%s", strings.Join(diffs, "\n"), res.Butane)
			}
		})
	}
}

func TestGolden(t *testing.T) {
	res, err := ignition.Encode(sample.Assets(), ignition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "config.ign", res.Ignition)
	golden(t, "config.bu", res.Butane)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; if the change is intended, run go test -update\ngot:\n%s", p, got)
	}
}

// TestIgnitionValidate runs the real ignition-validate on every combination.
func TestIgnitionValidate(t *testing.T) {
	tool := sample.Tool(t, "ignition-validate", sample.IgnitionValidateEnv)
	dir := t.TempDir()
	validate := func(t *testing.T, a render.Assets, o ignition.Options) {
		t.Helper()
		res, err := ignition.Encode(a, o)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "config.ign")
		if err := os.WriteFile(p, res.Ignition, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(tool, p).CombinedOutput()
		// ignition-validate exits 0 on warnings, printing them; they count
		// as failures here, as they would for `butane --strict`.
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("ignition-validate: %v\n%s", err, out)
		}
	}
	for _, c := range combos {
		t.Run(name(c.opts), func(t *testing.T) { validate(t, sample.Assets(), c.opts) })
	}
	t.Run("tricky", func(t *testing.T) { validate(t, sample.TrickyAssets(), ignition.Options{}) })
}

// TestIgnitionValidateRejects makes sure the real validator run above can
// fail at all, so a silently broken tool does not pass everything.
func TestIgnitionValidateRejects(t *testing.T) {
	tool := sample.Tool(t, "ignition-validate", sample.IgnitionValidateEnv)
	p := filepath.Join(t.TempDir(), "bad.ign")
	if err := os.WriteFile(p, []byte(`{"ignition":{"version":"3.5.0"},"storage":{"files":[{"path":"relative"}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, p).CombinedOutput(); err == nil {
		t.Errorf("ignition-validate accepted an invalid config:\n%s", out)
	}
}
