package model

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// mergeBomb is a 557-byte cluster.yaml whose chained merge keys double at
// each link: walked naively it expands to 2^18 copies of k, each one an
// unknown field.
func mergeBomb() string {
	lines := []string{"apiVersion: kubestrap.dev/v1alpha1", "kind: Cluster", "x0: &a0 {k: v}"}
	for i := 1; i <= 18; i++ {
		lines = append(lines, fmt.Sprintf("x%d: &a%d {<<: [*a%d, *a%d]}", i, i, i-1, i-1))
	}
	return strings.Join(append(lines, "<<: *a18"), "\n") + "\n"
}

// labelBomb is a nodes file whose nodes' labels merge the previous node's
// twice.
func labelBomb() string {
	s := "- {name: n0, ip: 172.27.129.100, labels: &l0 {k: v}}\n"
	for i := 1; i <= 20; i++ {
		s += fmt.Sprintf("- {name: n%d, ip: 172.27.129.%d, labels: &l%d {<<: [*l%d, *l%d]}}\n", i, 100+i, i, i-1, i-1)
	}
	return s
}

// doublingEnv is the guide's file preceded by 41 lines of X=$X$X: evaluated
// naively, X would reach 2^41 bytes. KUBE_APISERVER, which kubestrap needs,
// reads X.
func doublingEnv() string {
	return "X=a\n" + strings.Repeat("X=$X$X\n", 41) +
		edit(baseEnv, `export KUBE_APISERVER="https://${MASTER_IP}:6443"`, `export KUBE_APISERVER="https://${MASTER_IP}:6443$X"`)
}

// panicEnv has a line that makes mvdan.cc/sh's expander panic.
func panicEnv() string { return baseEnv + "X=${B@A$}\n" }

// TestHostileInputs checks what Load says about inputs built to hang it,
// exhaust its memory, crash it or flood its output. Each used to do so.
func TestHostileInputs(t *testing.T) {
	expansion := func(file string, size int) string {
		return fmt.Sprintf("%s: the document expands to more than %d nodes through aliases and merge keys; "+
			"write the repeated parts out, or reuse them less", file, walkBudget(size))
	}
	var manyBadRows strings.Builder
	for i := range 250 {
		fmt.Fprintf(&manyBadRows, "n%d,300.0.0.1\n", i)
	}
	tests := []struct {
		name  string
		files map[string]string
		src   Sources
		// want is the whole list of problems, or, with wantPrefix, its start.
		want       []string
		wantPrefix bool
		wantCount  int // with wantPrefix: the number of problems
	}{
		{
			name:  "chained merge keys",
			files: map[string]string{"cluster.yaml": mergeBomb()},
			src:   yamlSrc,
			want: []string{
				expansion("cluster.yaml", len(mergeBomb())),
				"cluster.yaml:3: x0: unknown field",
				"cluster.yaml:3: k: unknown field",
				"cluster.yaml:4: x1: unknown field",
			},
			wantPrefix: true, wantCount: 21,
		},
		{
			name:       "chained merge keys in a nodes file",
			files:      map[string]string{"cluster.yaml": baseYAML, "nodes.yaml": labelBomb()},
			src:        Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.yaml"},
			want:       []string{expansion("nodes.yaml", len(labelBomb()))},
			wantPrefix: true, wantCount: 1,
		},
		{
			name:  "doubling variable",
			files: map[string]string{"environment.sh": doublingEnv()},
			src:   envSrc,
			want: []string{
				"environment.sh:47: KUBE_APISERVER: value needs X (line 42), which needs X (line 22), " +
					"whose value cannot be evaluated: it reads more than 1 MiB of other variables",
			},
		},
		{
			name:  "expander panic on an unneeded variable",
			files: map[string]string{"environment.sh": panicEnv() + "PATH=${PATH@A$}\n"},
			src:   envSrc,
		},
		{
			name:  "expander panic on a needed variable",
			files: map[string]string{"environment.sh": edit(baseEnv, `"https://${MASTER_IP}:6443"`, `${MASTER_IP@A$}`)},
			src:   envSrc,
			want: []string{"environment.sh:5: KUBE_APISERVER: value cannot be evaluated: " +
				"the shell library failed on it: unexpected @A$ param expansion"},
		},
		{
			name:  "global replacement",
			files: map[string]string{"environment.sh": edit(baseEnv, `"https://${MASTER_IP}:6443"`, `"https://${MASTER_IP//./$MASTER_IP}:6443"`)},
			src:   envSrc,
			want: []string{"environment.sh:5: KUBE_APISERVER: value cannot be evaluated: " +
				"${MASTER_IP//pattern/string} is refused: its output can grow without bound"},
		},
		{
			name:  "replacement in every element",
			files: map[string]string{"environment.sh": baseEnv + "export NODE_IPS=(\"${NODE_IPS[@]/#/$MASTER_IP}\")\n"},
			src:   envSrc,
			want: []string{"environment.sh:12: NODE_IPS: value cannot be evaluated: " +
				"${NODE_IPS[@]/pattern/string} is refused: its output can grow without bound"},
		},
		{
			name:  "brace sequence",
			files: map[string]string{"environment.sh": edit(baseEnv, "(kube-node1 kube-node2 kube-node3)", "(n{1..100000000})")},
			src:   envSrc,
			want:  []string{"environment.sh:3: NODE_NAMES: value cannot be evaluated: its brace expansions make more than 100000 words"},
		},
		{
			name:  "brace product",
			files: map[string]string{"environment.sh": edit(baseEnv, "(kube-node1 kube-node2 kube-node3)", "(n"+strings.Repeat("{a,b}", 20)+")")},
			src:   envSrc,
			want:  []string{"environment.sh:3: NODE_NAMES: value cannot be evaluated: its brace expansions make more than 100000 words"},
		},
		{
			name:  "deep nesting",
			files: map[string]string{"environment.sh": baseEnv + "Y=" + strings.Repeat("$(", maxShellGroups) + strings.Repeat(")", maxShellGroups) + "\n"},
			src:   envSrc,
			want: []string{"environment.sh:12: more than 10000 of ( { [ ` and ! in the file: kubestrap reads plain assignments, " +
				"and the shell parser's stack grows with each level of nesting"},
		},
		{
			name:  "huge cluster file",
			files: map[string]string{"cluster.yaml": baseYAML + "# " + strings.Repeat("x", maxFileSize) + "\n"},
			src:   yamlSrc,
			want:  []string{"flag -f: cluster.yaml: larger than 8 MiB; kubestrap reads no input that big"},
		},
		{
			name:  "huge environment file",
			files: map[string]string{"environment.sh": baseEnv + "# " + strings.Repeat("x", maxEnvFileSize) + "\n"},
			src:   envSrc,
			want:  []string{"flag --env: environment.sh: larger than 1 MiB; kubestrap reads no input that big"},
		},
		{
			name:       "many problems",
			files:      map[string]string{"cluster.yaml": baseYAML, "nodes.csv": manyBadRows.String()},
			src:        Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.csv"},
			want:       []string{`nodes.csv:1: nodes[0].ip: "300.0.0.1" is not an IP address`, `nodes.csv:2: nodes[1].ip: "300.0.0.1" is not an IP address`},
			wantPrefix: true, wantCount: 101,
		},
		{
			name:  "mapping of 100,000 keys",
			files: map[string]string{"cluster.yaml": withKubelet("  config:\n    evictionHard: {" + strings.Repeat("a: 1, ", 100_000) + "b: 2}\n")},
			src:   yamlSrc,
			want:  []string{"cluster.yaml:16: kubelet.config.evictionHard: a mapping of 100001 keys: kubestrap takes at most 500 in one"},
		},
		{
			name:  "deep nesting in kubelet.config",
			files: map[string]string{"cluster.yaml": withKubelet("  config: {foo: " + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + "}\n")},
			src:   yamlSrc,
			want: []string{
				// Paths in messages are cut at maxText/4 bytes.
				"cluster.yaml:15: " + printable(deepestFollowed("kubelet.config.foo", "[0]"), maxText/4) +
					": nested too deeply, or under too long a key: kubestrap follows no value whose path is longer than 512 bytes",
				"cluster.yaml:15: kubelet.config.foo: unknown KubeletConfiguration field",
			},
		},
		{
			name:  "long key over a wide mapping",
			files: map[string]string{"cluster.yaml": withKubelet("  config: {" + strings.Repeat("k", 600) + ": {" + strings.Repeat("a: 1, ", 400) + "b: 2}}\n")},
			src:   yamlSrc,
			want: []string{"cluster.yaml:15: kubelet.config: nested too deeply, or under too long a key: " +
				"kubestrap follows no value whose path is longer than 512 bytes"},
		},
		{
			name:  "huge value",
			files: map[string]string{"cluster.yaml": edit(baseYAML, "podCIDR: 172.30.0.0/16", "podCIDR: "+strings.Repeat("9", 100_000))},
			src:   yamlSrc,
			want:  []string{`cluster.yaml:8: podCIDR: "` + strings.Repeat("9", maxQuoted) + `"… is not a CIDR like 10.254.0.0/16`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, tt.files)
			_, err := Load(context.Background(), tt.src, testNow)
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want Problems", err)
			}
			got := problemStrings(t, err)
			checkBounded(t, err)
			if tt.wantPrefix {
				if len(got) < len(tt.want) || !reflect.DeepEqual(got[:len(tt.want)], tt.want) {
					t.Errorf("problems:\n%s\nwant them to start with\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
				}
				if tt.wantCount > 0 && len(got) != tt.wantCount {
					t.Errorf("%d problems, want %d:\n%s", len(got), tt.wantCount, strings.Join(got, "\n"))
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// deepestFollowed is the longest path, made of base and repeats of step,
// that the walker follows.
func deepestFollowed(base, step string) string {
	for len(base+step+step) <= maxPathLen {
		base += step
	}
	return base
}

// checkBounded checks what every error from Load must be: Problems, at most
// maxProblems of them and a count of the rest, each with a position and on
// one bounded line.
func checkBounded(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err is %T, not Problems: %v", err, err)
	}
	if len(ps) > maxProblems+1 {
		t.Errorf("%d problems, want at most %d and a count", len(ps), maxProblems)
	}
	for i, p := range ps {
		if i == maxProblems {
			if p.Pos != (Pos{}) || !strings.HasPrefix(p.Msg, "… and ") || !strings.HasSuffix(p.Msg, " more problems") {
				t.Errorf("problem %d is %q, want a count of the rest", i, p.Error())
			}
			continue
		}
		if p.Pos.File == "" {
			t.Errorf("problem %d has no position: %q", i, p.Error())
		}
		if line := p.Error(); len(line) > 3*maxText || strings.ContainsFunc(line, isControl) {
			t.Errorf("problem %d is not one bounded line: %q", i, line)
		}
	}
	if len(err.Error()) > (maxProblems+1)*3*maxText {
		t.Errorf("error of %d bytes", len(err.Error()))
	}
}

// Anchors and merge keys used the way people use them stay well within the
// walker's budget.
func TestAliasesWithinBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString("- &defaults\n  name: n0\n  ip: 10.1.0.1\n  labels: {rack: r1, zone: z1, pool: general, tier: a, team: b}\n")
	for i := 1; i < 500; i++ {
		fmt.Fprintf(&b, "- <<: *defaults\n  name: n%d\n  ip: 10.1.%d.%d\n", i, i/250, i%250+1)
	}
	inDir(t, map[string]string{"cluster.yaml": baseYAML, "nodes.yaml": b.String()})
	c := mustLoad(t, Sources{ClusterFile: "cluster.yaml", NodesFile: "nodes.yaml"})
	if len(c.Nodes) != 500 || c.Nodes[499].Labels["team"] != "b" || c.Nodes[499].Name != "n499" {
		t.Errorf("nodes: %d, last %+v", len(c.Nodes), c.Nodes[len(c.Nodes)-1])
	}
}

// TestQuote checks the quoting of values in messages.
func TestQuote(t *testing.T) {
	long := strings.Repeat("é", maxQuoted+1)
	for in, want := range map[string]string{
		"a b":    `"a b"`,
		"2\x00x": `"2\x00x"`,
		long:     `"` + long[:2*maxQuoted] + `"…`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%.20q) = %.40s, want %.40s", in, got, want)
		}
	}
}
