package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkGenerateOffline runs the whole offline command on 1,000 synthetic
// nodes; bench/ times the same at 10,000 and 20,000 with the real binary.
func BenchmarkGenerateOffline(b *testing.B) {
	dir := b.TempDir()
	var csv strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&csv, "node-%05d,10.20.%d.%d\n", i, i/250, i%250+1)
	}
	nodes := filepath.Join(dir, "nodes.csv")
	if err := os.WriteFile(nodes, []byte(csv.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var stderr bytes.Buffer
		args := []string{"kubestrap", "generate", "--offline", "-f", "../../fixtures/guide/cluster.yaml", "--nodes", nodes, "--force", "--out", filepath.Join(dir, "out")}
		if code := run(context.Background(), args, stdio{out: &stderr, err: &stderr}, defaultDeps()); code != 0 {
			b.Fatalf("exit %d: %s", code, stderr.String())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "µs/node")
}
