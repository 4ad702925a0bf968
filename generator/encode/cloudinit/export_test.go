package cloudinit

import "github.com/kubestrap/kubestrap/generator/render"

// FastPath reports whether UserData writes a's document directly rather than
// through yaml.v3.
func FastPath(a render.Assets) bool {
	_, ok := appendUserData(nil, a)
	return ok
}

// MarshalUserData is the yaml.v3 path of UserData, for benchmarks.
var MarshalUserData = marshalUserData

// FetchScript is the script the install unit runs.
func FetchScript() []byte { return fetchScript }
