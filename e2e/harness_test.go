package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Environment variables the test reads.
const (
	// envRun turns the test on outside CI.
	envRun = "KUBESTRAP_E2E"
	// envKeep keeps the work directory (logs, node roots) after a passing run.
	envKeep = "KUBESTRAP_E2E_KEEP"
	// envBreak breaks one step on purpose, to see the test fail: "token"
	// gives node B's token Secret a wrong secret.
	envBreak = "KUBESTRAP_E2E_BREAK"
)

// binaries are the components the test runs, from e2e/tools/build.sh.
type binaries struct {
	// k8sVersion is the version kube-apiserver, kube-controller-manager and
	// kubelet were built at; the cluster file targets it.
	k8sVersion                                                     string
	apiserver, controllerManager, kubelet, etcd, fakeCRI, ignition string
}

// harness is one run: its work directory, its processes, the admin client.
type harness struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	bins binaries

	mu    sync.Mutex
	procs []*proc

	// client is the admin client, set once the apiserver is up.
	client kubernetes.Interface
	// diagnostics run when the test has failed, before processes stop.
	diagnostics []func()
}

// requireE2E skips the test unless it is asked for (KUBESTRAP_E2E=1 or
// CI=true); once asked for, a missing prerequisite fails it.
func requireE2E(t *testing.T) binaries {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Getenv(envRun) != "1" && !ci {
		t.Skipf("end-to-end test: set %s=1 to run it (CI=true runs it too); binaries: e2e/tools/build.sh", envRun)
	}
	if os.Geteuid() != 0 {
		t.Fatal("the end-to-end test needs root: it runs in its own network namespace and bind-mounts each node's files in private mount namespaces")
	}
	for _, tool := range []string{"unshare", "mount", "ip", "cloud-init", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found in PATH (cloud-init: apt-get install cloud-init; ip: iproute2; unshare, mount: util-linux)", tool)
		}
	}
	return findBinaries(t)
}

// newHarness sets up a run inside the private network namespace and
// registers the one cleanup that, in order: prints diagnostics if the test
// failed, stops every process (newest first), and removes the work
// directory unless the test failed or KUBESTRAP_E2E_KEEP is set.
func newHarness(t *testing.T) *harness {
	t.Helper()
	bins := requireE2E(t)
	dir, err := os.MkdirTemp("", "kubestrap-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, ctx: ctx, dir: dir, bins: bins}
	for _, d := range []string{"logs", "pki", "nodes"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("work directory: %s", dir)
	t.Cleanup(func() {
		if t.Failed() {
			h.diagnose()
		}
		h.stopAll()
		cancel()
		if t.Failed() || os.Getenv(envKeep) != "" {
			t.Logf("kept the work directory (logs, node roots, documents): %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("removing %s: %v", dir, err)
		}
	})
	return h
}

// findBinaries asks e2e/tools/build.sh where it puts each binary (it
// computes the names from its go.mod) and checks they are all there.
func findBinaries(t *testing.T) binaries {
	t.Helper()
	out, err := exec.Command("tools/build.sh", "--print").Output()
	if err != nil {
		t.Fatalf("tools/build.sh --print: %v", err)
	}
	paths := map[string]string{}
	versions := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("tools/build.sh --print: unexpected line %q", line)
		}
		versions[f[0]], paths[f[0]] = f[1], f[2]
	}
	var missing []string
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kubelet", "etcd", "fake-cri", "ignition-apply"} {
		p, ok := paths[name]
		if !ok {
			t.Fatalf("tools/build.sh --print does not list %s", name)
		}
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("binaries missing (build them with e2e/tools/build.sh, ~15 min cold):\n  %s", strings.Join(missing, "\n  "))
	}
	b := binaries{
		k8sVersion:        versions["kubelet"],
		apiserver:         paths["kube-apiserver"],
		controllerManager: paths["kube-controller-manager"],
		kubelet:           paths["kubelet"],
		etcd:              paths["etcd"],
		fakeCRI:           paths["fake-cri"],
		ignition:          paths["ignition-apply"],
	}
	// The apiserver and the kubelet compare versions: a build without the
	// version ldflags says v0.0.0-master and the kubelet would not match.
	v, err := exec.Command(b.kubelet, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", b.kubelet, err)
	}
	if got, want := strings.TrimSpace(string(v)), "Kubernetes "+b.k8sVersion; got != want {
		t.Fatalf("%s --version says %q, want %q (rebuild it with e2e/tools/build.sh)", b.kubelet, got, want)
	}
	return b
}

func (h *harness) path(elem ...string) string {
	return filepath.Join(append([]string{h.dir}, elem...)...)
}

// proc is a long-running process in its own process group, its output in
// logs/<name>.log.
type proc struct {
	name   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // from Wait, once exited is closed
	// url is where it serves HTTP, for the processes that do.
	url string
}

// start runs cmd in the background until the test ends.
func (h *harness) start(name string, cmd *exec.Cmd) *proc {
	h.t.Helper()
	p := &proc{name: name, log: h.path("logs", name+".log"), cmd: cmd, exited: make(chan struct{})}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	fmt.Fprintf(f, "+ %s\n", shellJoin(cmd.Args))
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so stopping it stops what it started; and
	// SIGKILL if the test binary dies first (a test timeout panics).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		h.t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(f, "+ exited: %v\n", p.err)
		f.Close()
		close(p.exited)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p
}

// checkRunning fails the test if p has exited.
func (h *harness) checkRunning(p *proc) {
	h.t.Helper()
	select {
	case <-p.exited:
		h.t.Fatalf("%s exited: %v\n%s", p.name, p.err, tail(p.log, 40, false))
	default:
	}
}

func (h *harness) stopAll() {
	h.mu.Lock()
	procs := h.procs
	h.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
}

func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	// A stopped process (the race check stops one) acts on it once resumed.
	_ = syscall.Kill(-pgid, syscall.SIGCONT)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
}

// run runs a short command to completion, its output in logs/<name>.log,
// and fails the test (showing the output) if it fails.
func (h *harness) run(name string, cmd *exec.Cmd) []byte {
	h.t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Minute)
	defer cancel()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	runErr := runContext(ctx, cmd)
	log := fmt.Sprintf("+ %s\n%s", shellJoin(cmd.Args), out.Bytes())
	if runErr != nil {
		log += fmt.Sprintf("+ failed: %v\n", runErr)
	}
	if err := os.WriteFile(h.path("logs", name+".log"), []byte(log), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if runErr != nil {
		h.t.Fatalf("%s: %v\n%s", name, runErr, log)
	}
	return out.Bytes()
}

// runContext is cmd.Run with a deadline, for a Cmd built elsewhere (so not
// with exec.CommandContext): past it, cmd's process group is killed.
func runContext(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("%w (killed)", ctx.Err())
	}
}

// waitFor polls cond every second until it reports done, failing the test
// when timeout passes or when one of the watched processes exits. cond's
// status string says where things stand; the last one is in the failure.
func (h *harness) waitFor(what string, timeout time.Duration, watch []*proc, cond func(ctx context.Context) (done bool, status string)) {
	h.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var status string
	for {
		for _, p := range watch {
			h.checkRunning(p)
		}
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		var done bool
		done, status = cond(ctx)
		cancel()
		if done {
			h.t.Logf("%s (%s)", what, time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %s waiting for: %s\nlast status: %s", timeout, what, status)
		}
		select {
		case <-h.ctx.Done():
			h.t.Fatal(h.ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// diagnose prints what helps explain a failure: every process's log tail
// and the diagnostics the steps registered (CSRs, nodes).
func (h *harness) diagnose() {
	h.mu.Lock()
	procs := h.procs
	h.mu.Unlock()
	var b strings.Builder
	for _, p := range procs {
		state := "running"
		select {
		case <-p.exited:
			state = fmt.Sprintf("exited: %v", p.err)
		default:
		}
		if strings.HasPrefix(p.name, "kubelet") {
			// A kubelet logs a lot at --v=2: its warnings and errors say
			// why it did not join.
			fmt.Fprintf(&b, "\n===== %s (%s), last 50 distinct warnings and errors in %s\n%s", p.name, state, p.log, tail(p.log, 50, true))
			continue
		}
		fmt.Fprintf(&b, "\n===== %s (%s), last 25 distinct lines of %s\n%s", p.name, state, p.log, tail(p.log, 25, false))
	}
	h.t.Logf("diagnostics:%s", b.String())
	for _, d := range h.diagnostics {
		d()
	}
}

// tail returns the last n distinct lines of a file. A line that repeats
// (klog header aside: a kubelet that cannot register says so ten times a
// second) is shown once, where it last appeared, with its count, so the line
// that explains a failure is not pushed out by the noise it causes.
// With problems, only klog's W, E and F lines and unstructured ones (a
// crash, the command line) are shown.
func tail(path string, n int, problems bool) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)\n", err)
	}
	defer f.Close()
	type entry struct {
		line  string
		count int
		last  int
	}
	seen := map[string]*entry{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for i := 0; sc.Scan(); i++ {
		line := sc.Text()
		key := line
		klog := len(line) > 1 && strings.ContainsRune("IWEF", rune(line[0])) && line[1] >= '0' && line[1] <= '9'
		if klog {
			if _, msg, ok := strings.Cut(line, "] "); ok {
				key = msg
			}
		}
		if problems && (klog && line[0] == 'I' || !klog && (line == "" || line[0] == ' ' || line[0] == '\t')) {
			continue
		}
		e := seen[key]
		if e == nil {
			e = &entry{}
			seen[key] = e
		}
		e.line, e.last = line, i
		e.count++
	}
	entries := make([]*entry, 0, len(seen))
	for _, e := range seen {
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b *entry) int { return a.last - b.last })
	if len(entries) > n {
		entries = entries[len(entries)-n:]
	}
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.line)
		if e.count > 1 {
			fmt.Fprintf(&b, "  [x%d]", e.count)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// lastLine returns the last line of a file that contains substr.
func lastLine(path, substr string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var last string
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, substr) {
			last = strings.TrimSpace(line)
		}
	}
	return last
}

// shellJoin quotes argv for a log line a person can paste into a shell.
func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`;&|<>(){}*?[]#~!") {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
