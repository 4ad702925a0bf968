package ignition_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/render"
	"github.com/kubestrap/kubestrap/internal/parseback"
	"github.com/kubestrap/kubestrap/internal/sample"
)

// stockAssets is a node of a stock image: a fetched kubelet (or sysext),
// the login user's keys and a static network.
func stockAssets(sysext bool) render.Assets {
	a := sample.Assets()
	hash := "sha256-" + strings.Repeat("0f", 32)
	if sysext {
		a.Fetches = []render.Fetch{{
			Path: "/opt/extensions/kubernetes/kubernetes-v1.37.2-x86-64.raw", Mode: 0o644,
			URL: "https://github.com/flatcar/sysext-bakery/releases/download/latest/kubernetes-v1.37.2-x86-64.raw", Hash: hash,
			Link: "/etc/extensions/kubernetes.raw", Sysext: true, RequiredBy: render.UnitName,
		}}
	} else {
		a.Fetches = []render.Fetch{{
			Path: "/opt/bin/kubelet", Mode: 0o755, URL: "http://mirror.internal/v1.37.2/bin/linux/amd64/kubelet", Hash: hash, RequiredBy: render.UnitName,
		}}
	}
	a.SSHAuthorizedKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKubestrapKubestrap ops@example"}
	a.SSHUser = "core"
	a.Network = &render.Network{MAC: "52:54:00:12:34:56", Addresses: []string{"10.0.0.5/24", "fd00::5/64"}, Gateway: "10.0.0.1", DNS: []string{"10.0.0.2", "fd00::2"}}
	return a
}

// TestStockIgnition: the real validator accepts the stock node for both
// variants; read back, the kubelet is fetched with its hash (so Ignition
// verifies it), the sysext is linked and systemd-sysext enabled, the keys
// are core's, the network is in the variant's own format; and the template
// writes Encode's bytes.
func TestStockIgnition(t *testing.T) {
	for _, variant := range []string{ignition.VariantFCOS, ignition.VariantFlatcar} {
		for _, sysext := range []bool{false, true} {
			name := variant
			if sysext {
				name += "-sysext"
			}
			t.Run(name, func(t *testing.T) {
				a := stockAssets(sysext)
				o := ignition.Options{Variant: variant}
				res, err := ignition.Encode(a, o)
				if err != nil {
					t.Fatal(err)
				}
				t.Run("ignition-validate", func(t *testing.T) {
					tool := sample.Tool(t, "ignition-validate", sample.IgnitionValidateEnv)
					p := filepath.Join(t.TempDir(), "config.ign")
					if err := os.WriteFile(p, res.Ignition, 0o600); err != nil {
						t.Fatal(err)
					}
					if out, err := exec.Command(tool, p).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
						t.Errorf("ignition-validate: %v\n%s", err, out)
					}
				})
				doc, err := parseback.Ignition(res.Ignition)
				if err != nil {
					t.Fatal(err)
				}
				f := a.Fetches[0]
				got, ok := doc.Lookup(f.Path)
				if !ok || got.Kind != parseback.Fetched || string(got.Contents) != f.URL+" "+f.Hash || got.Mode != uint32(f.Mode) {
					t.Errorf("fetched file %+v", got)
				}
				if sysext {
					l, ok := doc.Lookup(f.Link)
					if !ok || l.Kind != parseback.Link || string(l.Contents) != f.Path {
						t.Errorf("sysext link %+v", l)
					}
					if !strings.Contains(strings.Join(doc.Enabled, " "), render.SysextUnit) {
						t.Errorf("enabled %v: no %s", doc.Enabled, render.SysextUnit)
					}
				}
				if keys := doc.SSHKeys["core"]; len(keys) != 1 || keys[0] != a.SSHAuthorizedKeys[0] {
					t.Errorf("core's keys %q", keys)
				}
				netPath, want := ignition.NetworkManagerPath, "address1=10.0.0.5/24\ngateway=10.0.0.1\ndns=10.0.0.2;\n"
				if variant == ignition.VariantFlatcar {
					netPath, want = ignition.NetworkdPath, "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nAddress=10.0.0.5/24\nAddress=fd00::5/64\nGateway=10.0.0.1\nDNS=10.0.0.2\nDNS=fd00::2\n"
				}
				if n, ok := doc.Lookup(netPath); !ok || !strings.Contains(string(n.Contents), want) {
					t.Errorf("%s:\n%s\nwant it to hold\n%s", netPath, n.Contents, want)
				}
				tmpl, err := ignition.NewTemplate(a, o)
				if err != nil {
					t.Fatal(err)
				}
				filled, _, err := tmpl.Fill(a)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(filled, res.Ignition) {
					t.Error("the template's bytes differ from Encode's")
				}
				other := stockAssets(sysext)
				other.SSHAuthorizedKeys = nil
				if _, _, err := tmpl.Fill(other); err == nil {
					t.Error("the template filled a node with other keys")
				}
			})
		}
	}
}
