package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// The paths the documents use on a node (README: "Both documents lay down
// the same files").
const (
	caPath                  = "/etc/kubernetes/pki/ca.crt"
	bootstrapKubeconfigPath = "/etc/kubernetes/bootstrap-kubelet.kubeconfig"
	kubeletConfigPath       = "/etc/kubernetes/kubelet.config.json"
	kubeletKubeconfigPath   = "/etc/kubernetes/kubelet.kubeconfig"
	unitPath                = "/etc/systemd/system/kubelet.service"
	dropInPath              = "/etc/systemd/system/kubelet.service.d/99-kubestrap.conf"
	hostnamePath            = "/etc/hostname"
	kubeletDir              = "/var/lib/kubelet"
	clientCertPath          = "/var/lib/kubelet/pki/kubelet-client-current.pem"
	// kubeletBinary is kubelet.binary in the cluster file: on the node
	// "image" it is an empty file over which the cached kubelet is
	// bind-mounted in the kubelet's namespace.
	kubeletBinary = "/opt/k8s/bin/kubelet"
)

// How a node is provisioned.
const (
	viaIgnition  = "ignition"   // ignition-apply --offline --root ROOT config.ign
	viaCloudInit = "cloud-init" // cloud-init single --name write_files, then runcmd's install -d
)

// node is one kubelet host, simulated: its filesystem is root, a directory
// that private mount namespaces bind over the host's paths.
type node struct {
	name, ip string
	via      string
	root     string
	// port and healthzPort are the per-node kubelet.config overrides that
	// let two kubelets share this host.
	port, healthzPort int
	// tokenID is the bootstrap token its documents carry.
	tokenID string
	kubelet *proc
}

func (n *node) path(p string) string { return filepath.Join(n.root, p) }

// seedImage lays down what the node's OS image would have before first
// boot: passwd/group (Ignition resolves "root" in the target root), the
// kubelet binary's path (a mount point here), and the directories the
// namespaces bind.
func (h *harness) seedImage(n *node) {
	h.t.Helper()
	// etc/kubernetes: a bind source for cloud-init's namespace (the documents
	// create what is inside it).
	for _, d := range []string{"etc/kubernetes", "etc/systemd/system", "opt/k8s/bin", "var/lib", "var/log", "run"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			h.t.Fatal(err)
		}
	}
	writeFile(h.t, n.path("etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	writeFile(h.t, n.path("etc/group"), []byte("root:x:0:\n"), 0o644)
	// A bind target for cloud-init's namespace, which the documents rewrite.
	writeFile(h.t, n.path("etc/hostname"), []byte("localhost\n"), 0o644)
	writeFile(h.t, n.path(kubeletBinary), nil, 0o755)
}

// nodeCommand runs argv in a private mount namespace where each path in
// binds is the node's own directory (or file) of that path. Mounts made in
// the namespace never reach the host; if one fails, argv does not run.
func (h *harness) nodeCommand(n *node, binds []string, extra map[string]string, argv ...string) *exec.Cmd {
	h.t.Helper()
	var script strings.Builder
	script.WriteString("set -eu\n")
	for _, p := range binds {
		// A bind needs a mount point on the host. /etc/kubernetes is the
		// one the host may lack; an empty directory is left behind (on a
		// machine that is a real node it exists and stays untouched: the
		// bind hides it only inside the namespace).
		if _, err := os.Stat(p); os.IsNotExist(err) {
			if err := os.Mkdir(p, 0o755); err != nil {
				h.t.Fatalf("creating mount point %s on the host: %v", p, err)
			}
			h.t.Logf("created the empty mount point %s on the host", p)
		}
		fmt.Fprintf(&script, "mount --bind -- %s %s\n", shellJoin([]string{n.path(p)}), shellJoin([]string{p}))
	}
	for _, dst := range slices.Sorted(maps.Keys(extra)) {
		fmt.Fprintf(&script, "mount --bind -- %s %s\n", shellJoin([]string{extra[dst]}), shellJoin([]string{dst}))
	}
	script.WriteString(`exec "$@"` + "\n")
	args := append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script.String(), "sh"}, argv...)
	return exec.Command("unshare", args...)
}

// applyIgnition provisions n from its Ignition config with Ignition's own
// ignition-apply, writing into the node's root.
func (h *harness) applyIgnition(n *node, config string) {
	h.t.Helper()
	cmd := exec.Command(h.bins.ignition, "--offline", "--root", n.root, config)
	// Ignition's main picks ignition-apply by argv[0]; the cached binary's
	// file name carries its version.
	cmd.Args[0] = "ignition-apply"
	// ignition-apply refuses to run unless it believes it is in a container
	// (it must never rewrite a host it runs on): here it writes only into
	// --root, which is what that check protects.
	cmd.Env = append(os.Environ(), "container=kubestrap-e2e")
	h.run(n.name+"-ignition-apply", cmd)
}

// applyCloudInit provisions n from its #cloud-config with Debian's
// cloud-init, inside a namespace where the node's root holds /etc/kubernetes,
// /etc/systemd/system, and cloud-init's own state (/var/lib/cloud,
// /run/cloud-init, /var/log/cloud-init*.log). write_files is the module that
// lays the files down; runcmd's `install -d` lines, which create the
// directories, run next; its systemctl lines are the unit start this test does
// itself with the unit's ExecStart.
func (h *harness) applyCloudInit(n *node, userData string) {
	h.t.Helper()
	// /etc/hostname too: write_files writes it, and without the bind it
	// would rename the host.
	binds := []string{"/etc/kubernetes", "/etc/systemd/system", "/etc/hostname", "/var/lib", "/var/log", "/run"}
	h.run(n.name+"-cloud-init", h.nodeCommand(n, binds, nil,
		"cloud-init", "--file", userData, "single", "--name", "write_files", "--frequency", "always"))

	data, err := os.ReadFile(userData)
	if err != nil {
		h.t.Fatal(err)
	}
	var doc struct {
		RunCmd []any `json:"runcmd"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		h.t.Fatalf("%s: %v", userData, err)
	}
	var enables bool
	for i, entry := range doc.RunCmd {
		list, ok := entry.([]any)
		if !ok {
			h.t.Fatalf("%s: runcmd[%d] is %q: the test only knows argv lists", userData, i, entry)
		}
		argv := make([]string, len(list))
		for j, a := range list {
			argv[j] = fmt.Sprint(a)
		}
		switch {
		case argv[0] == "install" && slices.Contains(argv, "-d"):
			h.run(fmt.Sprintf("%s-runcmd-%d", n.name, i), h.nodeCommand(n, binds, nil, argv...))
		case slices.Equal(argv, []string{"systemctl", "daemon-reload"}):
		case slices.Equal(argv, []string{"systemctl", "enable", "--now", "kubelet.service"}):
			enables = true
		default:
			h.t.Fatalf("%s: runcmd[%d] %q: unknown to the e2e test (teach applyCloudInit what it means)", userData, i, argv)
		}
	}
	if !enables {
		h.t.Fatalf("%s: runcmd never runs `systemctl enable --now kubelet.service`", userData)
	}
}

// checkLaidDown checks what the documents wrote into the node's root:
// modes as the README promises, the unit enabled, and a bootstrap
// kubeconfig that dials our apiserver with the node's token.
func (h *harness) checkLaidDown(n *node, cp *controlPlane) {
	h.t.Helper()
	for p, want := range map[string]fs.FileMode{
		caPath:                  0o644,
		bootstrapKubeconfigPath: 0o600,
		kubeletConfigPath:       0o644,
		unitPath:                0o644,
		dropInPath:              0o644,
		hostnamePath:            0o644,
		kubeletDir:              fs.ModeDir | 0o700,
	} {
		fi, err := os.Stat(n.path(p))
		if err != nil {
			h.t.Fatalf("%s (via %s): %v", n.name, n.via, err)
		}
		if got := fi.Mode() & (fs.ModeDir | fs.ModePerm); got != want {
			h.t.Errorf("%s (via %s): %s has mode %v, want %v", n.name, n.via, p, got, want)
		}
	}
	if got, err := os.ReadFile(n.path(hostnamePath)); err != nil || string(got) != n.name+"\n" {
		h.t.Errorf("%s (via %s): %s holds %q (%v), want the node's name", n.name, n.via, hostnamePath, got, err)
	}
	if n.via == viaIgnition {
		// Ignition enables units through a systemd preset.
		preset, err := os.ReadFile(n.path("/etc/systemd/system-preset/20-ignition.preset"))
		if err != nil || !slices.Contains(strings.Split(string(preset), "\n"), "enable kubelet.service") {
			h.t.Errorf("%s: Ignition did not enable kubelet.service (preset: %q, %v)", n.name, preset, err)
		}
	}
	kc, err := clientcmd.LoadFromFile(n.path(bootstrapKubeconfigPath))
	if err != nil {
		h.t.Fatalf("%s: %v", n.name, err)
	}
	ctx := kc.Contexts[kc.CurrentContext]
	if ctx == nil || kc.Clusters[ctx.Cluster] == nil || kc.AuthInfos[ctx.AuthInfo] == nil {
		h.t.Fatalf("%s: bootstrap kubeconfig has no usable current context", n.name)
	}
	if got := kc.Clusters[ctx.Cluster].Server; got != cp.url {
		h.t.Errorf("%s: bootstrap kubeconfig dials %s, want %s", n.name, got, cp.url)
	}
	id, _, ok := strings.Cut(kc.AuthInfos[ctx.AuthInfo].Token, ".")
	if !ok {
		h.t.Fatalf("%s: bootstrap kubeconfig holds no bootstrap token", n.name)
	}
	n.tokenID = id
}

// startKubelet starts n's kubelet exactly as its kubelet.service says:
// the ExecStart argv, nothing added, with systemd's working directory and
// environment, in a namespace where the node's root holds /etc/kubernetes,
// /var/lib (so /var/lib/kubelet), /var/log and /opt, and the cached kubelet
// is bind-mounted at kubelet.binary.
func (h *harness) startKubelet(n *node) {
	h.t.Helper()
	argv, err := execStart(n.path(unitPath), n.path(dropInPath))
	if err != nil {
		h.t.Fatalf("%s: %v", n.name, err)
	}
	if argv[0] != kubeletBinary {
		h.t.Fatalf("%s: ExecStart runs %s, want kubelet.binary %s", n.name, argv[0], kubeletBinary)
	}
	h.t.Logf("%s: ExecStart: %s", n.name, shellJoin(argv))
	cmd := h.nodeCommand(n, []string{"/etc/kubernetes", "/var/lib", "/var/log", "/opt"},
		map[string]string{kubeletBinary: h.bins.kubelet}, argv...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	n.kubelet = h.start("kubelet-"+n.name, cmd)
}

// readFile reads path p of the node, following a symlink the way the node
// sees it: the kubelet's kubelet-client-current.pem is an absolute symlink
// (-> /var/lib/kubelet/pki/kubelet-client-<date>.pem), which means the node's
// file, not the host's.
func (n *node) readFile(p string) ([]byte, error) {
	for range 10 {
		target, err := os.Readlink(n.path(p))
		if err != nil {
			// Not a symlink (or missing): read it.
			return os.ReadFile(n.path(p))
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean(target)
	}
	return nil, fmt.Errorf("%s: too many levels of symbolic links", p)
}

// waitFile waits for a file the kubelet writes in the node's root.
func (h *harness) waitFile(n *node, p string, timeout time.Duration) []byte {
	h.t.Helper()
	var data []byte
	h.waitFor(fmt.Sprintf("%s: kubelet wrote %s", n.name, p), timeout, []*proc{n.kubelet}, func(context.Context) (bool, string) {
		var err error
		data, err = n.readFile(p)
		if err != nil {
			return false, err.Error()
		}
		return len(data) > 0, "empty"
	})
	return data
}
