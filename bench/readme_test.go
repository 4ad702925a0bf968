// Package bench holds kubestrap's benchmarks (run.sh) and the check that the
// README quotes their figures as BENCHMARKS.md has them.
package bench

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// figure is a number with its unit as the table writes it: "3.33 s",
// "120 MB", "1.09x", "76%".
var figure = regexp.MustCompile(`\b\d+(?:\.\d+)?(?: s| MB|x|%)`)

// The README's performance figures are bench/run.sh's, from the run that
// wrote BENCHMARKS.md: every figure in its bench block must be in the table.
func TestREADMEQuotesBenchmarks(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile("../BENCHMARKS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- bench:begin")
	block, _, ok2 := strings.Cut(rest, "<!-- bench:end")
	if !ok || !ok2 {
		t.Fatal("README.md has no bench block (<!-- bench:begin ... <!-- bench:end)")
	}
	figures := figure.FindAllString(block, -1)
	if len(figures) < 5 {
		t.Fatalf("README.md's bench block quotes %d figures: %q", len(figures), block)
	}
	for _, f := range figures {
		if !strings.Contains(string(table), f) {
			t.Errorf("README.md quotes %q, which BENCHMARKS.md does not have", f)
		}
	}
}
