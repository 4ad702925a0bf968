package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/fleet"
)

func statusNow() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

func row(name string, tok fleet.TokenState, csr fleet.CSRState, node fleet.NodeState, age string) fleet.NodeStatus {
	exp := statusNow().Add(24 * time.Hour)
	minted := statusNow().Add(-time.Hour)
	r := fleet.NodeStatus{Name: name,
		Token: fleet.TokenStatus{ID: "abc" + name[len(name)-3:], State: tok, Expires: &exp, Minted: &minted, Age: age},
		CSR:   fleet.CSRStatus{State: csr}, Node: fleet.NodeInfo{State: node}}
	if csr != fleet.CSRNone {
		r.CSR.Name = "csr-" + name
	}
	if node != fleet.NodeAbsent {
		r.Node.KubeletVersion = "v1.37.2"
	}
	return r
}

func TestStatusTable(t *testing.T) {
	var out strings.Builder
	p := &statusPrinter{w: &out, format: "table", now: statusNow}
	denied := row("node-b", fleet.TokenUsed, fleet.CSRDenied, fleet.NodeAbsent, "60m")
	denied.CSR.Reason, denied.CSR.Message = "KubestrapDenied", "token abcde-b was minted for node node-b, but the CSR asks for \"system:node:x\""
	none := fleet.NodeStatus{Name: "node-c", Token: fleet.TokenStatus{State: fleet.TokenNone}, CSR: fleet.CSRStatus{State: fleet.CSRNone}, Node: fleet.NodeInfo{State: fleet.NodeAbsent}}
	several := row("node-a", fleet.TokenUsed, fleet.CSRIssued, fleet.NodeReady, "60m")
	several.Token.Others = 2
	if err := p.print([]fleet.NodeStatus{several, denied, none}); err != nil {
		t.Fatal(err)
	}
	want := `NODE     TOKEN         EXPIRES                STATE   CSR      NODE-STATE   VERSION   AGE
node-a   abce-a (+2)   2026-03-02T12:00:00Z   used    issued   Ready        v1.37.2   60m
node-b   abce-b        2026-03-02T12:00:00Z   used    denied   absent       -         60m
node-c   -             -                      none    none     absent       -         -
node-b: CSR csr-node-b denied: KubestrapDenied: token abcde-b was minted for node node-b, but the CSR asks for "system:node:x"
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestStatusJSONAndYAML(t *testing.T) {
	rows := []fleet.NodeStatus{row("node-a", fleet.TokenUnused, fleet.CSRNone, fleet.NodeAbsent, "60m")}
	tests := []struct {
		format      string
		want, unset []string
	}{
		{"json", []string{`"name": "node-a"`, `"state": "unused"`, `"expires": "2026-03-02T12:00:00Z"`, `"age": "60m"`}, []string{"kubeletVersion", "others"}},
		{"yaml", []string{"- csr:\n", "name: node-a", "state: unused", `expires: "2026-03-02T12:00:00Z"`, "age: 60m"}, []string{"kubeletVersion", "others", "---"}},
	}
	for _, tt := range tests {
		var out strings.Builder
		if err := (&statusPrinter{w: &out, format: tt.format, now: statusNow}).print(rows); err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("-o %s: no %q in\n%s", tt.format, w, out.String())
			}
		}
		for _, u := range tt.unset {
			if strings.Contains(out.String(), u) {
				t.Errorf("-o %s: %q in\n%s", tt.format, u, out.String())
			}
		}
	}
}

// gatherer answers with each of steps in turn, then the last forever.
func gatherer(steps ...[]fleet.NodeStatus) func(context.Context) ([]fleet.NodeStatus, error) {
	i := 0
	return func(context.Context) ([]fleet.NodeStatus, error) {
		s := steps[min(i, len(steps)-1)]
		i++
		return s, nil
	}
}

func TestWatchPrintsChangesUntilReady(t *testing.T) {
	var out, errs strings.Builder
	p := &statusPrinter{w: &out, format: "table", watch: true, now: statusNow}
	a0 := row("node-a", fleet.TokenUnused, fleet.CSRNone, fleet.NodeAbsent, "1m")
	b0 := row("node-b", fleet.TokenUnused, fleet.CSRNone, fleet.NodeAbsent, "1m")
	a1 := row("node-a", fleet.TokenUsed, fleet.CSRIssued, fleet.NodeReady, "2m")
	b1 := row("node-b", fleet.TokenUnused, fleet.CSRNone, fleet.NodeAbsent, "2m") // only its age changed
	b2 := row("node-b", fleet.TokenUsed, fleet.CSRIssued, fleet.NodeReady, "3m")
	g := gatherer([]fleet.NodeStatus{a0, b0}, []fleet.NodeStatus{a1, b1}, []fleet.NodeStatus{a1, b1}, []fleet.NodeStatus{a1, b2})
	if err := watchStatus(context.Background(), p, g, time.Millisecond, time.Minute, &errs); err != nil {
		t.Fatalf("watch: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var got []string
	for _, l := range lines {
		f := strings.Fields(l)
		got = append(got, f[0]+" "+f[1]+" "+f[4])
	}
	want := []string{"TIME NODE STATE", "12:00:00 node-a unused", "12:00:00 node-b unused", "12:00:00 node-a used", "12:00:00 node-b used"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("printed\n%s\nwant rows\n%s", out.String(), strings.Join(want, "\n"))
	}
	if errs.Len() > 0 {
		t.Errorf("stderr: %s", errs.String())
	}
}

func TestWatchTimesOut(t *testing.T) {
	var out, errs strings.Builder
	p := &statusPrinter{w: &out, format: "json", watch: true, now: statusNow}
	ready := row("node-a", fleet.TokenUsed, fleet.CSRIssued, fleet.NodeReady, "1m")
	waiting := row("node-b", fleet.TokenUsed, fleet.CSRPending, fleet.NodeAbsent, "1m")
	failing := false
	g := func(context.Context) ([]fleet.NodeStatus, error) {
		if failing {
			return nil, errors.New("kubeconfig k: connection refused")
		}
		failing = true
		return []fleet.NodeStatus{ready, waiting}, nil
	}
	err := watchStatus(context.Background(), p, g, time.Millisecond, 50*time.Millisecond, &errs)
	if err == nil || !strings.Contains(err.Error(), "--timeout 50ms passed with 1 node(s) not Ready: node-b (absent) (as last seen") {
		t.Errorf("got %v, want the timeout naming node-b", err)
	}
	// A failing read after the first is said once, not at each try.
	if n := strings.Count(errs.String(), "connection refused"); n != 1 {
		t.Errorf("the read error was reported %d times:\n%s", n, errs.String())
	}
	if n := strings.Count(out.String(), `"name": "node-a"`); n != 1 {
		t.Errorf("printed %d times, want once:\n%s", n, out.String())
	}
}

func TestWatchFirstReadFails(t *testing.T) {
	p := &statusPrinter{w: &strings.Builder{}, format: "table", watch: true, now: statusNow}
	boom := errors.New("forbidden")
	g := func(context.Context) ([]fleet.NodeStatus, error) { return nil, boom }
	if err := watchStatus(context.Background(), p, g, time.Millisecond, time.Minute, &strings.Builder{}); !errors.Is(err, boom) {
		t.Errorf("got %v, want the first read's error at once", err)
	}
}
