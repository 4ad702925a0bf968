package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The outage check's nodes: never contacted, only named in the documents.
const (
	outageNodes  = 400
	outagePrefix = "outage-node-"
	// outageKillAt is how many of the run's Secrets must exist before the
	// apiserver is killed: well into the run, far from its end.
	outageKillAt = 20
	// outageExitWithin bounds the killed run: its in-flight creates retry
	// for about 6 s, then its rollback gives up after 30 s.
	outageExitWithin = 60 * time.Second
)

// tokenPattern is a bootstrap token, id.secret: never in kubestrap's output.
var tokenPattern = regexp.MustCompile(`[a-z0-9]{6}\.[a-z0-9]{16}`)

// checkOutage (live mode) kills kube-apiserver while `generate` is creating
// the tokens of 400 nodes, and checks kubestrap's all-or-nothing promise:
// it fails (exit 1) within a bounded time, says which nodes got no token
// and why, shows no token, and writes nothing; then, with the apiserver
// back, the same generate succeeds with a new token for every node: the
// tokens the failed run created but could not delete (the server was down)
// never committed, so they are in no document and are not reused.
func (h *harness) checkOutage(ks *kubestrap, cp *controlPlane, clusterFile string) {
	h.t.Helper()
	var csv strings.Builder
	names := make([]string, outageNodes)
	for i := range outageNodes {
		names[i] = fmt.Sprintf("%s%03d", outagePrefix, i)
		fmt.Fprintf(&csv, "%s,10.203.%d.%d\n", names[i], i/250, i%250+1)
	}
	nodesFile := h.path("outage-nodes.csv")
	writeFile(h.t, nodesFile, []byte(csv.String()), 0o644)
	out := h.path("out-outage")
	args := []string{"generate", "--kubeconfig", cp.adminKubeconfig, "-f", clusterFile, "--nodes", nodesFile, "--parallel", "2", "--timeout", "60s", "--out", out}

	// The run to break, in the background.
	var output bytes.Buffer
	cmd := exec.Command(ks.path, args...)
	cmd.Stdout, cmd.Stderr = &output, &output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	var runErr error
	exited := make(chan struct{})
	go func() { runErr = cmd.Wait(); close(exited) }()
	defer func() {
		// A failed check must not leave it running.
		select {
		case <-exited:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()

	// Kill the apiserver once the run has created some of its Secrets.
	count := func(ctx context.Context) (int, error) {
		list, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=kubestrap"})
		if err != nil {
			return 0, err
		}
		n := 0
		for _, s := range list.Items {
			if strings.HasPrefix(s.Annotations[nodeLabel], outagePrefix) {
				n++
			}
		}
		return n, nil
	}
	pollUntil := time.Now().Add(time.Minute)
	for {
		select {
		case <-exited:
			h.t.Fatalf("kubestrap %s ended (%v) before %d of its Secrets existed: the apiserver could not be killed mid-run\n%s", strings.Join(args, " "), runErr, outageKillAt, output.String())
		default:
		}
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		n, err := count(ctx)
		cancel()
		if err == nil && n >= outageKillAt {
			h.killAPIServer(cp)
			h.t.Logf("outage: killed kube-apiserver %s after kubestrap's start, with %d outage Secrets listed", time.Since(start).Round(time.Millisecond), n)
			break
		}
		if time.Now().After(pollUntil) {
			h.t.Fatalf("outage: %d outage Secrets after a minute (last error: %v)", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	select {
	case <-exited:
	case <-time.After(outageExitWithin):
		h.t.Fatalf("outage: kubestrap still running %s after the apiserver died\n%s", outageExitWithin, output.String())
	}
	took := time.Since(start)
	log := fmt.Sprintf("+ %s %s\n%s+ exited: %v after %s\n", ks.path, shellJoin(args), output.String(), runErr, took.Round(time.Millisecond))
	writeFile(h.t, h.path("logs", "generate-outage.log"), []byte(log), 0o644)
	msg := output.String()
	h.t.Logf("outage: kubestrap exited (%v) after %s:\n%s", runErr, took.Round(100*time.Millisecond), abbreviate(msg, 12))

	var exitErr *exec.ExitError
	if !errors.As(runErr, &exitErr) || exitErr.ExitCode() != 1 {
		h.t.Errorf("outage: kubestrap exited with %v, want exit status 1", runErr)
	}
	if m := regexp.MustCompile(`no token for (\d+) node\(s\) \((` + outagePrefix + `\d{3}(, )?)+\)`).FindStringSubmatch(msg); m == nil {
		h.t.Errorf("outage: kubestrap's error does not name the nodes that got no token (want %q)", "no token for N node(s) ("+outagePrefix+"...)")
	}
	// A create cut off mid-response ("unexpected EOF") is retried and then
	// meets the refused connection, as do the deletes that follow.
	if !strings.Contains(msg, "connection refused") {
		h.t.Errorf("outage: kubestrap's error does not give the transport error (%q)", "connection refused")
	}
	// The Secrets it created could not be deleted with the server down: the
	// error must say so, or an admin would think nothing was left behind.
	if !regexp.MustCompile(`\d+ Secret\(s\) may be left in kube-system, valid until they expire \(delete them with: kubectl -n kube-system delete secret -l kubestrap.dev/run=[a-z0-9]{10}\): bootstrap-token-`).MatchString(msg) {
		h.t.Errorf("outage: kubestrap's error does not mention the Secrets it could not delete")
	}
	if tok := tokenPattern.FindString(msg); tok != "" {
		h.t.Errorf("outage: kubestrap's output shows a token (%s...)", tok[:7])
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		h.t.Errorf("outage: the failed run left %s (stat: %v): it must write nothing", out, err)
	}
	if staging, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".kubestrap-*")); len(staging) > 0 {
		h.t.Errorf("outage: the failed run left its staging directory: %v", staging)
	}

	h.restartAPIServer(cp)
	// What the failed run left behind: the Secrets it could not delete.
	leftovers := h.outageSecrets(names)
	left := 0
	for _, n := range names {
		if len(leftovers[n]) > 0 {
			left++
		}
	}
	h.t.Logf("outage: the failed run left token Secrets for %d node(s)", left)
	// A create whose response the kill cut off may have been stored: the
	// nodes kubestrap names as failed can have a Secret it knows nothing of
	// (so it neither deletes nor names it). Valid, but never reused.
	if m := regexp.MustCompile(`no token for \d+ node\(s\) \(([^)]*)\)`).FindStringSubmatch(msg); m != nil {
		for _, n := range strings.Split(m[1], ", ") {
			h.t.Logf("outage: %s, named as failed, has token Secrets %v", n, leftovers[n])
		}
	}

	// The same generate, the apiserver back: it converges.
	rerun := h.run("generate-outage-rerun", exec.Command(ks.path, withFlag(args, "--timeout", "2m")...))
	m := regexp.MustCompile(`tokens: (\d+) created, (\d+) reused`).FindSubmatch(rerun)
	if m == nil {
		h.t.Fatalf("outage: the re-run's output has no %q summary:\n%s", "tokens: N created, M reused", abbreviate(string(rerun), 12))
	}
	h.t.Logf("outage: re-run: %s", m[0])
	created, _ := strconv.Atoi(string(m[1]))
	reused, _ := strconv.Atoi(string(m[2]))
	if created != outageNodes || reused != 0 {
		h.t.Errorf("outage: re-run: %d created, %d reused; want %d created: the failed run's leftovers never committed", created, reused, outageNodes)
	}
	if tok := tokenPattern.Find(rerun); tok != nil {
		h.t.Errorf("outage: the re-run's output shows a token (%s...)", tok[:7])
	}
	// Each node's documents carry a token of its own that exists; the
	// failed run's leftovers are still there, untouched, beside it.
	after := h.outageSecrets(names)
	for _, n := range names {
		id := h.userDataTokenID(filepath.Join(out, n, "user-data"))
		secrets := after[n]
		if !slices.Contains(secrets, "bootstrap-token-"+id) {
			h.t.Errorf("outage: %s's user-data carries token %s, which has no Secret (the node's Secrets: %v)", n, id, secrets)
		}
		if slices.Contains(leftovers[n], "bootstrap-token-"+id) {
			h.t.Errorf("outage: %s's user-data carries the failed run's uncommitted token %s", n, id)
		}
		if len(secrets) != len(leftovers[n])+1 {
			h.t.Errorf("outage: %s has %d token Secrets after the re-run, want its %d leftover(s) and its new one: %v", n, len(secrets), len(leftovers[n]), secrets)
		}
	}
}

// killAPIServer SIGKILLs kube-apiserver, as a crash would. Nothing watches
// it after startControlPlane, so its exit fails no check.
func (h *harness) killAPIServer(cp *controlPlane) {
	h.t.Helper()
	_ = syscall.Kill(-cp.apiserver.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-cp.apiserver.exited:
	case <-time.After(10 * time.Second):
		h.t.Fatal("kube-apiserver still running 10s after SIGKILL")
	}
}

// restartAPIServer starts kube-apiserver again with the same command line
// and waits for it to be ready. The admin client reconnects by itself.
func (h *harness) restartAPIServer(cp *controlPlane) {
	h.t.Helper()
	cp.apiserver = h.start("kube-apiserver-restarted", exec.Command(cp.apiserverArgs[0], cp.apiserverArgs[1:]...))
	h.waitFor("kube-apiserver ready again (/readyz)", 2*time.Minute, []*proc{cp.etcd, cp.apiserver}, func(ctx context.Context) (bool, string) {
		body, err := h.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, body)
		}
		return true, ""
	})
}

// outageSecrets returns the names of the valid kubestrap token Secrets of
// each of nodes, by the node annotation.
func (h *harness) outageSecrets(nodes []string) map[string][]string {
	h.t.Helper()
	list, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).List(h.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=kubestrap"})
	if err != nil {
		h.t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range nodes {
		want[n] = true
	}
	byNode := map[string][]string{}
	for _, s := range list.Items {
		node := s.Annotations[nodeLabel]
		if !want[node] || s.DeletionTimestamp != nil {
			continue
		}
		exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
		if err != nil || !exp.After(time.Now()) || string(s.Data["usage-bootstrap-authentication"]) != "true" {
			h.t.Errorf("outage: Secret %s (node %s) is not a valid token: expiration %q, usage-bootstrap-authentication %q", s.Name, node, s.Data["expiration"], s.Data["usage-bootstrap-authentication"])
			continue
		}
		byNode[node] = append(byNode[node], s.Name)
	}
	return byNode
}

// withFlag returns args with flag's value replaced by value.
func withFlag(args []string, flag, value string) []string {
	out := slices.Clone(args)
	if i := slices.Index(out, flag); i >= 0 && i+1 < len(out) {
		out[i+1] = value
	}
	return out
}

// abbreviate keeps a long output's first lines and says how many it left out.
func abbreviate(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) <= lines {
		return strings.Join(all, "\n")
	}
	return fmt.Sprintf("%s\n... (%d more lines)", strings.Join(all[:lines], "\n"), len(all)-lines)
}
