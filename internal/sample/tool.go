package sample

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// IgnitionValidateEnv names the variable `make test` uses to pass the
// ignition-validate it built (it is cached outside PATH).
const IgnitionValidateEnv = "KUBESTRAP_IGNITION_VALIDATE"

// Tool returns the path of an external validator: the one named by the
// environment variable env if that is set (and non-empty), else name looked
// up on PATH. A missing tool skips the test, except on CI (CI=true), where the
// validators are installed on purpose and a silent skip would hide that the
// real check never ran.
func Tool(t testing.TB, name, env string) string {
	t.Helper()
	if env != "" {
		if p := os.Getenv(env); p != "" {
			if _, err := exec.LookPath(p); err != nil {
				t.Fatalf("%s=%s is not an executable: %v", env, p, err)
			}
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required when CI=true: %v", name, err)
	}
	hint := "put it on PATH"
	if env != "" {
		hint = "set " + env + " or " + hint
	}
	t.Skipf("%s not found (%s): %v", name, hint, err)
	return ""
}

// CloudInitPython is the Python that runs cloud-init (its #! line), to call
// cloud-init's own modules.
func CloudInitPython(t testing.TB) string {
	t.Helper()
	tool := Tool(t, "cloud-init", "")
	script, err := os.ReadFile(tool)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := bytes.Cut(script, []byte("\n"))
	interp, ok := bytes.CutPrefix(first, []byte("#!"))
	if !ok {
		t.Fatalf("%s is not a script; cannot find its Python", tool)
	}
	fields := strings.Fields(string(interp))
	if len(fields) == 0 {
		t.Fatalf("%s has an empty #! line", tool)
	}
	if filepath.Base(fields[0]) == "env" && len(fields) > 1 {
		return fields[1]
	}
	return fields[0]
}
