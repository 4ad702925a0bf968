package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The race check's nodes: never contacted, only named in the documents.
const (
	raceNodes  = 300
	racePrefix = "race-node-"
	// raceStopAt is how many of run X's Secrets must exist before X is
	// stopped: enough for run Y to find some, far from X's end.
	raceStopAt = 5
)

// checkConcurrentRuns (live mode) is the race between two runs on the same
// nodes: run X creates tokens and is stopped (SIGSTOP) before it writes its
// documents; run Y, started on the nodes X has tokens for, completes; X is
// then interrupted (SIGINT) and rolls back its tokens. Y's documents must
// still work: Y may not have reused tokens of X's, which had not committed.
func (h *harness) checkConcurrentRuns(ks *kubestrap, cp *controlPlane, clusterFile string) {
	h.t.Helper()
	var csv strings.Builder
	for i := range raceNodes {
		fmt.Fprintf(&csv, "%s%03d,10.204.%d.%d\n", racePrefix, i, i/250, i%250+1)
	}
	nodesFile := h.path("race-nodes.csv")
	writeFile(h.t, nodesFile, []byte(csv.String()), 0o644)
	outX, outY := h.path("out-race-x"), h.path("out-race-y")
	argsX := []string{"generate", "--kubeconfig", cp.adminKubeconfig, "-f", clusterFile, "--nodes", nodesFile, "--parallel", "1", "--out", outX}

	x := h.start("generate-race-x", exec.Command(ks.path, argsX...))
	output := func() string {
		b, _ := os.ReadFile(x.log)
		return string(b)
	}

	// Stop X once it holds some tokens; which nodes they are for is what Y
	// is run on.
	var xNodes []string
	deadline := time.Now().Add(time.Minute)
	for len(xNodes) < raceStopAt {
		select {
		case <-x.exited:
			h.t.Fatalf("race: run X ended (%v) before it had %d tokens\n%s", x.err, raceStopAt, output())
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("race: run X had %d tokens after a minute", len(xNodes))
		}
		time.Sleep(5 * time.Millisecond)
		xNodes = h.raceTokenNodes()
	}
	if err := syscall.Kill(-x.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		h.t.Fatal(err)
	}
	xNodes = h.raceTokenNodes() // what it made before the stop took hold
	h.t.Logf("race: stopped run X with uncommitted tokens for %d node(s)", len(xNodes))

	yNodes := h.path("race-y-nodes.csv")
	var ycsv strings.Builder
	for _, n := range xNodes {
		var i int
		fmt.Sscanf(strings.TrimPrefix(n, racePrefix), "%d", &i)
		fmt.Fprintf(&ycsv, "%s,10.204.%d.%d\n", n, i/250, i%250+1)
	}
	writeFile(h.t, yNodes, []byte(ycsv.String()), 0o644)
	y := ks.run("generate-race-y", "generate", "--kubeconfig", cp.adminKubeconfig, "-f", clusterFile, "--nodes", yNodes, "--out", outY)
	if want := fmt.Sprintf("tokens: %d created, 0 reused", len(xNodes)); !strings.Contains(string(y), want) {
		h.t.Errorf("race: run Y reused tokens of a run that had not committed (want %q):\n%s", want, abbreviate(string(y), 8))
	}

	// X, interrupted, rolls back what it created.
	_ = syscall.Kill(-x.cmd.Process.Pid, syscall.SIGCONT)
	_ = syscall.Kill(-x.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-x.exited:
	case <-time.After(time.Minute):
		h.t.Fatalf("race: run X still running a minute after SIGINT\n%s", output())
	}
	var exitErr *exec.ExitError
	if !errors.As(x.err, &exitErr) || exitErr.ExitCode() != 1 {
		h.t.Errorf("race: interrupted run X exited with %v, want exit status 1\n%s", x.err, abbreviate(output(), 8))
	}
	if _, err := os.Stat(outX); !os.IsNotExist(err) {
		h.t.Errorf("race: interrupted run X left %s (stat: %v)", outX, err)
	}
	if left := h.raceTokenNodes(); len(left) != len(xNodes) {
		// Only Y's tokens may remain: one per node of Y.
		h.t.Errorf("race: after X's rollback, %d race nodes have tokens, want Y's %d", len(left), len(xNodes))
	}
	// Every token in Y's documents still exists.
	for _, n := range xNodes {
		id := h.userDataTokenID(filepath.Join(outY, n, "user-data"))
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		_, err := h.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, "bootstrap-token-"+id, metav1.GetOptions{})
		cancel()
		if apierrors.IsNotFound(err) {
			h.t.Errorf("race: %s: the token in run Y's documents (%s) was deleted by run X's rollback", n, id)
		} else if err != nil {
			h.t.Fatal(err)
		}
	}
	if tok := tokenPattern.FindString(output() + string(y)); tok != "" {
		h.t.Errorf("race: kubestrap's output shows a token (%s...)", tok[:7])
	}
}

var raceNode = regexp.MustCompile("^" + racePrefix + `\d{3}$`)

// raceTokenNodes lists the race nodes that have a token Secret, sorted.
func (h *harness) raceTokenNodes() []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	byNode, err := h.tokenSecrets(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for n := range byNode {
		if raceNode.MatchString(n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
