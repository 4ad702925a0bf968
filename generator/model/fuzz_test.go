package model

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The fuzz targets feed each loader arbitrary bytes, with every other input
// fixed, and check what Load promises about any input: no panic, Problems (or
// success), a bounded report with every problem located, the same answer
// twice, and, on success, no control character left in the Cluster.
//
//	make fuzz FUZZTIME=1m

func FuzzClusterFile(f *testing.F) {
	seedAll(f, injectYAML())
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzLoad(t, "cluster.yaml", data, func(dir string) Sources {
			return Sources{ClusterFile: filepath.Join(dir, "cluster.yaml")}
		})
	})
}

func FuzzEnvFile(f *testing.F) {
	seedAll(f, baseEnv)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzLoad(t, "environment.sh", data, func(dir string) Sources {
			return Sources{EnvFile: filepath.Join(dir, "environment.sh"), Overrides: Overrides{CAFile: filepath.Join(dir, "ca.pem")}}
		})
	})
}

func FuzzNodesCSV(f *testing.F) {
	seedAll(f, baseCSV, "\"kube\rnode1\",172.27.129.105\n")
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzLoad(t, "nodes.csv", data, func(dir string) Sources {
			return Sources{ClusterFile: filepath.Join(dir, "cluster.yaml"), NodesFile: filepath.Join(dir, "nodes.csv")}
		})
	})
}

func FuzzNodesYAML(f *testing.F) {
	seedAll(f, labelBomb(), nodesYAML("      maxPods: lots\n      authentication: {foo: 1}\n"),
		"- name: n1\n  ip: 172.27.129.105\n  kubelet: {extraArgs: {v: \"2\\0ExecStartPre=/bin/sh -c id\\0\"}}\n")
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzLoad(t, "nodes.yaml", data, func(dir string) Sources {
			return Sources{ClusterFile: filepath.Join(dir, "cluster.yaml"), NodesFile: filepath.Join(dir, "nodes.yaml")}
		})
	})
}

// injectYAML is the unit injection through kubelet.extraArgs.
func injectYAML() string {
	return withKubelet("  extraArgs:\n    v: \"2\\0ExecStartPre=/bin/sh -c id\\0\"\n")
}

// seedAll seeds a target with the guide's fixtures, the three attack inputs
// (chained merge keys, a doubling variable, an expander panic) and extra.
func seedAll(f *testing.F, extra ...string) {
	for _, name := range []string{"cluster.yaml", "environment.sh", "nodes.csv"} {
		data, err := os.ReadFile(filepath.Join("../../fixtures/guide", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range append([]string{baseYAML, mergeBomb(), doublingEnv(), panicEnv()}, extra...) {
		f.Add([]byte(s))
	}
}

// fuzzLoad writes data as name into a fresh directory, next to a valid CA
// (ca.pem) and cluster file (cluster.yaml, unless data is the cluster file),
// and loads the sources src names there.
func fuzzLoad(t *testing.T, name string, data []byte, src func(dir string) Sources) {
	ca, err := os.ReadFile("../../fixtures/pki/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// In order: data replaces cluster.yaml in FuzzClusterFile.
	for _, f := range []struct {
		name    string
		content []byte
	}{{"ca.pem", ca}, {"cluster.yaml", []byte(baseYAML)}, {name, data}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Load(context.Background(), src(dir), testNow)
	if err != nil && !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want Problems", err)
	}
	checkBounded(t, err)
	c2, err2 := Load(context.Background(), src(dir), testNow)
	if errText(err) != errText(err2) || (c == nil) != (c2 == nil) {
		t.Fatalf("Load is not deterministic:\n%s\n---\n%s", errText(err), errText(err2))
	}
	if c != nil {
		r := newReport()
		checkControl(c, r)
		if r.count() > 0 {
			t.Fatalf("Load accepted a control character: %v", r.problems())
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
