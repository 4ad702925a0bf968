package encode_test

import (
	"testing"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/internal/sample"
)

func BenchmarkIgnition(b *testing.B) {
	a := sample.Assets()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ignition.Encode(a, ignition.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUserData(b *testing.B) {
	a := sample.Assets()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cloudinit.UserData(a); err != nil {
			b.Fatal(err)
		}
	}
}
