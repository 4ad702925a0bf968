package cloudinit

import (
	_ "embed"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/kubestrap/kubestrap/generator/encode/internal/layout"
	"github.com/kubestrap/kubestrap/generator/render"
)

// FetchScript downloads, verifies and installs one fetched file; the
// install unit runs it once per file.
//
//go:embed kubestrap-fetch.sh
var fetchScript []byte

const (
	// FetchScriptPath is writable on the cloud-init family (Debian,
	// Ubuntu), whose /usr is the package manager's but /usr/local the
	// admin's.
	FetchScriptPath = "/usr/local/sbin/kubestrap-fetch"
	// sysextRefresh merges an extension put in place after boot.
	sysextRefresh = "/usr/bin/systemd-sysext refresh"
)

// InstallUnitName is the oneshot unit that fetches what unit requires:
// kubelet-install.service for kubelet.service.
func InstallUnitName(unitName string) string {
	return strings.TrimSuffix(unitName, path.Ext(unitName)) + "-install.service"
}

// Lower is what UserData writes for a, as Assets: its Fetches turned into
// the fetch script and install units. A root filesystem archive lays the
// same files down.
func Lower(a render.Assets) (render.Assets, error) { return lower(a) }

// lower turns Fetches into what cloud-init can carry: the fetch script and,
// per unit that requires files, a oneshot unit that fetches them, ordered
// before that unit and required by it once enabled (so a failed fetch keeps
// it from starting). The install units come first, so runcmd enables (and
// so runs) them before the units that need them.
func lower(a render.Assets) (render.Assets, error) {
	if len(a.Fetches) == 0 {
		return a, nil
	}
	var order []string
	byUnit := map[string][]render.Fetch{}
	for _, f := range a.Fetches {
		if _, ok := byUnit[f.RequiredBy]; !ok {
			order = append(order, f.RequiredBy)
		}
		byUnit[f.RequiredBy] = append(byUnit[f.RequiredBy], f)
	}
	var units []render.Unit
	for _, name := range order {
		contents, err := installUnit(name, byUnit[name])
		if err != nil {
			return a, fmt.Errorf("cloud-init user-data for node %q: %s: %w", a.Node, InstallUnitName(name), err)
		}
		units = append(units, render.Unit{Name: InstallUnitName(name), Contents: contents})
	}
	a.Files = append(append([]render.File(nil), a.Files...), render.File{Path: FetchScriptPath, Mode: 0o755, Contents: fetchScript})
	a.Units = append(units, a.Units...)
	a.Fetches = nil
	return a, nil
}

func installUnit(required string, fetches []render.Fetch) ([]byte, error) {
	opts := []*unit.UnitOption{
		unit.NewUnitOption("Unit", "Description", "Fetch and verify what "+required+" needs (kubestrap)"),
		unit.NewUnitOption("Unit", "Wants", "network-online.target"),
		unit.NewUnitOption("Unit", "After", "network-online.target"),
		unit.NewUnitOption("Unit", "Before", required),
		unit.NewUnitOption("Service", "Type", "oneshot"),
		unit.NewUnitOption("Service", "RemainAfterExit", "yes"),
	}
	sysext := false
	for _, f := range fetches {
		m, err := layout.UnixMode(f.Mode)
		if err != nil {
			return nil, err
		}
		// layout.Check has refused URLs with spaces, quotes, backslashes
		// or $; % is a specifier to systemd.
		args := []string{FetchScriptPath, f.URL, f.Hash, f.Path, fmt.Sprintf("%04o", m)}
		if f.Link != "" {
			args = append(args, f.Link)
		}
		opts = append(opts, unit.NewUnitOption("Service", "ExecStart", strings.ReplaceAll(strings.Join(args, " "), "%", "%%")))
		sysext = sysext || f.Sysext
	}
	if sysext {
		opts = append(opts, unit.NewUnitOption("Service", "ExecStart", sysextRefresh))
	}
	opts = append(opts, unit.NewUnitOption("Install", "RequiredBy", required))
	return io.ReadAll(unit.Serialize(opts))
}
