package cloudinit_test

import (
	"testing"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/internal/sample"
)

func BenchmarkUserData(b *testing.B) {
	a := sample.Assets()
	if !cloudinit.FastPath(a) {
		b.Fatal("the sample does not take the fast path")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cloudinit.UserData(a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUserDataYAML is what UserData costs for assets it has to marshal
// with yaml.v3 (it cost that for all assets before the fast path).
func BenchmarkUserDataYAML(b *testing.B) {
	a := sample.Assets()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cloudinit.MarshalUserData(a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMetaData(b *testing.B) {
	a := sample.Assets()
	ud, err := cloudinit.UserData(a)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cloudinit.MetaData(a, ud); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNode is the cloud-init share of generating one node: user-data,
// then meta-data from it.
func BenchmarkNode(b *testing.B) {
	a := sample.Assets()
	b.ReportAllocs()
	for b.Loop() {
		ud, err := cloudinit.UserData(a)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cloudinit.MetaData(a, ud); err != nil {
			b.Fatal(err)
		}
	}
}
