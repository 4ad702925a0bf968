package render

import "testing"

func BenchmarkNode(b *testing.B) {
	t := &testing.T{}
	c := guideCluster(t, "hardened")
	r, err := New(c)
	if err != nil {
		b.Fatal(err)
	}
	tok := testTok(t, c.Nodes[0].Name)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Node(c.Nodes[0], tok); err != nil {
			b.Fatal(err)
		}
	}
}
