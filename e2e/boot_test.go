package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Machines: a real Debian root filesystem (e2e/tools/rootfs.sh) booted
// under systemd-nspawn, with its own systemd as PID 1 and its own cloud-init,
// in the test's network namespace (no --private-network: it dials the
// apiserver at apiserverIP like a node on the cluster network would).
//
// nspawn runs without a host systemd here (the CI hosts have none as PID 1),
// so with --keep-unit --register=no: nothing registers the machine or makes
// its cgroups. The harness makes them, one per cgroup hierarchy under the
// test's own, moves nspawn in before it execs, and removes them after the
// machine is gone; nspawn gives the container a cgroup namespace rooted
// there. On a cgroup v1 host nspawn mounts the controller hierarchies
// read-only inside; the image's kubestrap-cgroup-rw.service remounts them
// writable before sysinit.target (the kubelet and containerd create cgroups).
//
// nspawn runs in a private mount namespace with a tmpfs on
// /run/systemd/nspawn, where it keeps per-machine state it could not remove
// from a /run that is not a tmpfs (as on the CI hosts); the mount point is
// created on the host if missing and left there, empty.

const (
	// envRootfs is the image tarball the outer run built (building needs
	// Debian's mirror, which the namespace cannot reach).
	envRootfs = "KUBESTRAP_E2E_ROOTFS"

	bootTimeout     = 3 * time.Minute
	poweroffTimeout = time.Minute
	execTimeout     = 2 * time.Minute
)

// machine is one booted (or bootable) root filesystem.
type machine struct {
	h    *harness
	name string
	// root is its root directory on the host: h.path("machines", name).
	root string

	// Set by boot:
	nspawn *proc
	// leader is the container's PID 1, as the host numbers it.
	leader int
	// pidNS is the container's PID namespace (readlink of ns/pid), to find
	// any process left in it.
	pidNS string
	// cgroups are the cgroup directories made for it, one per hierarchy.
	cgroups []string
}

// buildRootfs runs e2e/tools/rootfs.sh, which builds the image if it is
// missing (about a minute, from Debian's mirror: so outside the namespace)
// and prints its path.
func buildRootfs(t *testing.T) string {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("tools/rootfs.sh")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tools/rootfs.sh: %v\n%s", err, stderr.String())
	}
	path := strings.TrimSpace(string(out))
	t.Logf("root filesystem %s (%s)", path, time.Since(start).Round(100*time.Millisecond))
	return path
}

// rootfsTarball is the image the outer run handed over.
func (h *harness) rootfsTarball() string {
	h.t.Helper()
	path := os.Getenv(envRootfs)
	if path == "" {
		h.t.Fatalf("%s is not set: the outer run builds the root filesystem (tools/rootfs.sh) and sets it", envRootfs)
	}
	if _, err := os.Stat(path); err != nil {
		h.t.Fatalf("root filesystem: %v (build it with e2e/tools/rootfs.sh)", err)
	}
	return path
}

// newMachine extracts the image into a fresh h.path("machines", name). The
// name is nspawn's machine name, which is also the hostname until cloud-init
// sets one. Its /etc/machine-id is empty: not a first boot (machine-id(5)),
// systemd makes one up; firstBoot changes that.
func (h *harness) newMachine(name string) *machine {
	h.t.Helper()
	for _, tool := range []string{"systemd-nspawn", "nsenter", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			h.t.Fatalf("%s not found in PATH (systemd-nspawn: apt-get install systemd-container; nsenter: util-linux)", tool)
		}
	}
	tarball := h.rootfsTarball()
	m := &machine{h: h, name: name, root: h.path("machines", name)}
	if err := os.MkdirAll(filepath.Dir(m.root), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Mkdir(m.root, 0o755); err != nil {
		h.t.Fatalf("machine %s: %v", name, err)
	}
	// Numeric owners and xattrs (file capabilities) as the image has them.
	h.run("machine-"+name+"-extract", exec.Command("tar", "--extract", "--file", tarball, "--directory", m.root,
		"--preserve-permissions", "--numeric-owner", "--xattrs", "--xattrs-include=*"))
	return m
}

// path is p inside the machine's root, as the host sees it. Symlinks in the
// root are the machine's: an absolute one points into the host.
func (m *machine) path(p string) string { return filepath.Join(m.root, p) }

// seedNoCloud gives cloud-init its NoCloud seed (the image's only
// datasource): meta-data (instance-id, local-hostname) and user-data.
func (m *machine) seedNoCloud(metaData, userData string) {
	m.h.t.Helper()
	dir := m.path("/var/lib/cloud/seed/nocloud")
	writeFile(m.h.t, filepath.Join(dir, "meta-data"), []byte(metaData), 0o600)
	writeFile(m.h.t, filepath.Join(dir, "user-data"), []byte(userData), 0o600)
}

// ignitionOS makes the machine what an Ignition OS is on its first boot,
// after Ignition ran in the initramfs: no cloud-init, and /etc/machine-id
// "uninitialized", so systemd takes it as a first boot and applies the unit
// presets (Ignition enables units by writing
// /etc/systemd/system-preset/20-ignition.preset). Under nspawn this works
// as on a VM: the preset-enabled units start in the same boot.
func (m *machine) ignitionOS() {
	m.h.t.Helper()
	writeFile(m.h.t, m.path("/etc/cloud/cloud-init.disabled"), nil, 0o644)
	writeFile(m.h.t, m.path("/etc/machine-id"), []byte("uninitialized\n"), 0o444)
}

// usesCloudInit reports whether cloud-init will run: seeded (locally, or
// from a seedfrom URL: seedNoCloudNet) and not disabled.
func (m *machine) usesCloudInit() bool {
	if _, err := os.Stat(m.path("/etc/cloud/cloud-init.disabled")); err == nil {
		return false
	}
	for _, seed := range []string{"/var/lib/cloud/seed/nocloud/meta-data", seedFromConfig} {
		if _, err := os.Stat(m.path(seed)); err == nil {
			return true
		}
	}
	return false
}

// seedFromConfig is where seedNoCloudNet points cloud-init at its seed.
const seedFromConfig = "/etc/cloud/cloud.cfg.d/99-kubestrap-seed.cfg"

// seedNoCloudNet has cloud-init fetch its NoCloud seed from url (ending in
// "/"), as the kernel argument ds=nocloud;s=URL would: under nspawn the
// kernel command line is the host's, so it goes in cloud-init's own
// configuration, as the only datasource.
func (m *machine) seedNoCloudNet(url string) {
	m.h.t.Helper()
	writeFile(m.h.t, m.path(seedFromConfig), []byte("datasource_list: [NoCloud]\ndatasource:\n  NoCloud:\n    seedfrom: "+url+"\n"), 0o644)
}

// bootScript runs as nspawn's parent in a private mount namespace: it joins
// the machine's cgroups (the cgroup.procs files before "--"), puts a tmpfs
// on /run/systemd/nspawn, and execs nspawn (after "--").
const bootScript = `set -eu
while [ "$1" != -- ]; do echo $$ >"$1"; shift; done
shift
mkdir -p /run/systemd/nspawn
mount -t tmpfs -o mode=0755 kubestrap-e2e /run/systemd/nspawn
exec "$@"
`

// boot starts the machine and waits until its systemd has finished booting
// (running, or degraded: checks say which they accept) and, when it has a
// seed, until cloud-init has finished (boot-finished). The console goes to
// logs/machine-<name>.log. At the end of the test, a machine still running
// is stopped (on SIGTERM nspawn has its systemd halt it, SIGKILL after 15s)
// and its cgroups removed; on failure its state is logged first.
func (h *harness) boot(m *machine) {
	h.t.Helper()
	if m.nspawn != nil {
		h.t.Fatalf("machine %s: already booted", m.name)
	}
	m.makeCgroups()
	h.t.Cleanup(func() {
		if h.t.Failed() && m.running() {
			m.diagnose()
		}
		if m.nspawn != nil {
			m.nspawn.stop()
		}
		if leftovers, err := m.removeCgroups(); err != nil {
			h.t.Errorf("machine %s: %v (left: %s)", m.name, err, strings.Join(leftovers, ", "))
		}
	})
	args := []string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", bootScript, "sh"}
	for _, cg := range m.cgroups {
		args = append(args, filepath.Join(cg, "cgroup.procs"))
	}
	args = append(args, "--",
		"systemd-nspawn",
		"--boot",
		"--directory="+m.root,
		"--machine="+m.name,
		// No host systemd to make a scope or register with machined.
		"--keep-unit", "--register=no",
		// A pseudo-TTY as /dev/console, its output (systemd's boot status,
		// cloud-init's messages) in the log; nothing reads the test's
		// stdin. (--console=pipe boots too, but there is no /dev/console
		// then, and the log stays empty.)
		"--console=read-only",
		// The kubelet wants all of root's powers (and /dev/kmsg for its
		// OOM watcher); this host's bounding set still lacks
		// CAP_SYS_RESOURCE, which nothing here can add.
		"--capability=all",
		"--bind=/dev/kmsg",
		// Its journal stays in its root (persistent: /var/log/journal).
		"--link-journal=no",
		// Plain text in the log (PID 1 only: services get a clean
		// environment).
		"--setenv=SYSTEMD_COLORS=0",
	)
	cmd := exec.Command("unshare", args...)
	// No syscall filter from nspawn: it refuses what is not namespaced, such
	// as the keyring calls runc makes for each container. And /proc/sys,
	// /sys writable: the kubelet sets sysctls (kernel.panic, vm.overcommit_
	// memory...), which are the host's, as they are for the kubelets
	// TestNodesJoin runs on the host.
	cmd.Env = append(os.Environ(), "SYSTEMD_SECCOMP=0", "SYSTEMD_NSPAWN_API_VFS_WRITABLE=1")
	start := time.Now()
	m.nspawn = h.start("machine-"+m.name, cmd)

	// nspawn forks the container's PID 1 within milliseconds: poll faster
	// than waitFor does.
	for deadline := time.Now().Add(30 * time.Second); ; {
		h.checkRunning(m.nspawn)
		pid, err := findLeader(m.nspawn.cmd.Process.Pid)
		if err == nil {
			m.leader = pid
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("machine %s: %v after 30s\n%s", m.name, err, tail(m.nspawn.log, 30, false))
		}
		time.Sleep(20 * time.Millisecond)
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", m.leader))
	if err != nil {
		h.t.Fatalf("machine %s: %v", m.name, err)
	}
	m.pidNS = ns

	cloudInit := m.usesCloudInit()
	what := fmt.Sprintf("machine %s: systemd booted", m.name)
	if cloudInit {
		what += ", cloud-init finished"
	}
	h.waitFor(what, bootTimeout, []*proc{m.nspawn}, func(context.Context) (bool, string) {
		// is-system-running exits non-zero for all but "running".
		out, _ := m.exec("systemctl", "is-system-running")
		state := strings.TrimSpace(out)
		if state != "running" && state != "degraded" {
			return false, "systemd: " + state
		}
		if cloudInit {
			if _, err := m.exec("test", "-e", "/var/lib/cloud/instance/boot-finished"); err != nil {
				return false, "systemd " + state + ", cloud-init not finished"
			}
		}
		return true, ""
	})
	h.t.Logf("machine %s: booted in %s (leader PID %d)", m.name, time.Since(start).Round(100*time.Millisecond), m.leader)
}

// findLeader finds the container's PID 1: the child of nspawn that is PID 1
// in a PID namespace of its own.
func findLeader(nspawn int) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue // gone
		}
		var ppid int
		var nspid []string
		for line := range strings.Lines(string(status)) {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "PPid":
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			case "NSpid":
				nspid = strings.Fields(v)
			}
		}
		if ppid == nspawn && len(nspid) > 1 && nspid[len(nspid)-1] == "1" {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child of systemd-nspawn (PID %d) is PID 1 of a namespace yet", nspawn)
}

// running reports whether the machine is up.
func (m *machine) running() bool {
	if m.nspawn == nil || m.leader == 0 {
		return false
	}
	select {
	case <-m.nspawn.exited:
		return false
	default:
		return true
	}
}

// command is argv run inside the machine: nsenter into every namespace of
// its PID 1, with its root and working directory, and a clean environment.
// The process stays in the test's cgroups, outside the machine's systemd:
// for short commands (systemctl, cat, cloud-init status); anything that
// must run as a service, run with systemd-run or a unit.
func (m *machine) command(argv ...string) *exec.Cmd {
	args := append([]string{"--target", strconv.Itoa(m.leader), "--all", "--root", "--wd", "--"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=en_US.UTF-8",
		"TERM=dumb",
		"SYSTEMD_PAGER=",
		"SYSTEMD_COLORS=0",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// exec runs argv inside the machine and returns its output (stdout and
// stderr). The error names the machine and the command, with the output.
func (m *machine) exec(argv ...string) (string, error) {
	if !m.running() {
		return "", fmt.Errorf("machine %s: not running: cannot run %s", m.name, shellJoin(argv))
	}
	cmd := m.command(argv...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(m.h.ctx, execTimeout)
	defer cancel()
	if err := runContext(ctx, cmd); err != nil {
		return out.String(), fmt.Errorf("machine %s: %s: %w\n%s", m.name, shellJoin(argv), err, out.String())
	}
	return out.String(), nil
}

// run is exec that fails the test if argv fails.
func (m *machine) run(argv ...string) string {
	m.h.t.Helper()
	out, err := m.exec(argv...)
	if err != nil {
		m.h.t.Fatal(err)
	}
	return out
}

// journal is the machine's journal, of one unit or ("") all of it. It is
// read from the host (the journal is persistent, in the machine's root), so
// it works after poweroff too.
func (m *machine) journal(unit string) string {
	m.h.t.Helper()
	args := []string{"--directory=" + m.path("/var/log/journal"), "--no-pager", "--quiet", "--output=short-precise"}
	if unit != "" {
		args = append(args, "--unit="+unit)
	}
	out, err := exec.Command("journalctl", args...).CombinedOutput()
	if err != nil {
		m.h.t.Fatalf("machine %s: journalctl %s: %v\n%s", m.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// unitState is what systemd says of a unit: LoadState, ActiveState,
// SubState, Result, UnitFileState, ExecMainStatus (systemctl show).
func (m *machine) unitState(unit string) map[string]string {
	m.h.t.Helper()
	out := m.run("systemctl", "show", "--property=LoadState,ActiveState,SubState,Result,UnitFileState,ExecMainStatus", unit)
	state := map[string]string{}
	for line := range strings.Lines(out) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			state[k] = v
		}
	}
	return state
}

// cloudInitStatus is `cloud-init status --format json` inside the machine.
type cloudInitStatus struct {
	Status            string   `json:"status"`
	Detail            string   `json:"detail"`
	Errors            []string `json:"errors"`
	BootStatusCode    string   `json:"boot_status_code"`
	Datasource        string   `json:"datasource"`
	RecoverableErrors any      `json:"recoverable_errors"` // cloud-init ≥ 23.4
}

func (m *machine) cloudInitStatus() cloudInitStatus {
	m.h.t.Helper()
	// It exits 1 when cloud-init failed, and still prints the status.
	out, _ := m.exec("cloud-init", "status", "--long", "--format", "json")
	var st cloudInitStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		m.h.t.Fatalf("machine %s: cloud-init status --long --format json: %v\n%s", m.name, err, out)
	}
	return st
}

// cloudInitWarnings are the WARNING (and worse) lines of the machine's
// /var/log/cloud-init.log: status says "done" through them.
func (m *machine) cloudInitWarnings() []string {
	m.h.t.Helper()
	data, err := os.ReadFile(m.path("/var/log/cloud-init.log"))
	if err != nil {
		m.h.t.Fatalf("machine %s: %v", m.name, err)
	}
	var lines []string
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, "[WARNING]") || strings.Contains(line, "[ERROR]") || strings.Contains(line, "[CRITICAL]") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}

// poweroff shuts the machine down from inside (systemctl poweroff), waits
// for nspawn to exit (killing it after poweroffTimeout), and removes its
// cgroups; a process or cgroup left behind fails the test. It returns how
// long the shutdown took.
func (m *machine) poweroff() time.Duration {
	m.h.t.Helper()
	if !m.running() {
		m.h.t.Fatalf("machine %s: not running", m.name)
	}
	start := time.Now()
	// systemctl returns once the job is queued (or when PID 1 hangs up on
	// it, which is fine too): the wait below is what counts.
	if out, err := m.exec("systemctl", "poweroff"); err != nil {
		m.h.t.Logf("machine %s: systemctl poweroff: %v\n%s", m.name, err, out)
	}
	select {
	case <-m.nspawn.exited:
	case <-time.After(poweroffTimeout):
		m.h.t.Errorf("machine %s: still running %s after systemctl poweroff: killing it\n%s", m.name, poweroffTimeout, tail(m.nspawn.log, 30, false))
		_ = syscall.Kill(-m.nspawn.cmd.Process.Pid, syscall.SIGKILL)
		<-m.nspawn.exited
	}
	took := time.Since(start)
	if m.nspawn.err != nil {
		m.h.t.Errorf("machine %s: systemd-nspawn: %v\n%s", m.name, m.nspawn.err, tail(m.nspawn.log, 30, false))
	}
	if procs := m.leftoverProcs(); len(procs) > 0 {
		m.h.t.Errorf("machine %s: processes left in its PID namespace: %s", m.name, strings.Join(procs, ", "))
	}
	if leftovers, err := m.removeCgroups(); err != nil {
		m.h.t.Errorf("machine %s: %v (left: %s)", m.name, err, strings.Join(leftovers, ", "))
	}
	m.h.t.Logf("machine %s: powered off in %s", m.name, took.Round(100*time.Millisecond))
	return took
}

// leftoverProcs lists the host's processes still in the machine's PID
// namespace (none once its PID 1 is gone: the kernel kills them).
func (m *machine) leftoverProcs() []string {
	if m.pidNS == "" {
		return nil
	}
	var left []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if ns, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns/pid")); err == nil && ns == m.pidNS {
			comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
			left = append(left, fmt.Sprintf("%s (%s)", e.Name(), strings.TrimSpace(string(comm))))
		}
	}
	return left
}

// diagnose logs what explains a machine that did not do what the test
// wanted: systemd's state, failed units and jobs, cloud-init's status and
// output, and the journal's warnings and errors.
func (m *machine) diagnose() {
	var b strings.Builder
	for _, argv := range [][]string{
		{"systemctl", "is-system-running"},
		{"systemctl", "--failed", "--no-legend"},
		{"systemctl", "list-jobs", "--no-legend"},
		{"cloud-init", "status", "--long"},
		{"tail", "-n", "30", "/var/log/cloud-init-output.log"},
		{"journalctl", "--boot", "--priority=warning", "--lines=40", "--no-pager", "--quiet"},
	} {
		out, err := m.exec(argv...)
		if err != nil && out == "" {
			out = err.Error() + "\n"
		}
		fmt.Fprintf(&b, "\n----- %s\n%s", shellJoin(argv), out)
	}
	m.h.t.Logf("machine %s (leader PID %d), state:%s", m.name, m.leader, b.String())
}

// cgroupHierarchies returns, for every cgroup hierarchy this process is in
// (each v1 controller set and the v2 one), the directory of its cgroup.
func cgroupHierarchies() ([]string, error) {
	type mount struct{ root, point string }
	// Where each hierarchy is mounted: cgroup v1 by its super options (the
	// controllers, name=systemd), cgroup2 by its type.
	mounts := map[string]mount{}
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer mi.Close()
	sc := bufio.NewScanner(mi)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 {
			continue
		}
		var key string
		switch g[0] {
		case "cgroup2":
			key = ""
		case "cgroup":
			var ctrls []string
			for _, o := range strings.Split(g[2], ",") {
				if !slices.Contains([]string{"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children", "noprefix", "xattr", "cpuset_v2_mode", "favordynmods"}, o) && !strings.HasPrefix(o, "release_agent=") {
					ctrls = append(ctrls, o)
				}
			}
			slices.Sort(ctrls)
			key = strings.Join(ctrls, ",")
		default:
			continue
		}
		if _, seen := mounts[key]; !seen {
			mounts[key] = mount{root: f[3], point: f[4]}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for line := range strings.Lines(strings.TrimSpace(string(data))) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("/proc/self/cgroup: unexpected line %q", line)
		}
		ctrls := strings.Split(parts[1], ",")
		slices.Sort(ctrls)
		key := strings.Join(ctrls, ",")
		mnt, ok := mounts[key]
		if !ok {
			if key == "" {
				continue // a v1-only host: no cgroup2 mounted
			}
			return nil, fmt.Errorf("cgroup hierarchy %q (/proc/self/cgroup) is not mounted", parts[1])
		}
		rel, ok := strings.CutPrefix(parts[2], strings.TrimSuffix(mnt.root, "/"))
		if !ok {
			return nil, fmt.Errorf("cgroup %s of hierarchy %q is outside its mount %s (root %s)", parts[2], parts[1], mnt.point, mnt.root)
		}
		dirs = append(dirs, filepath.Join(mnt.point, rel))
	}
	return dirs, nil
}

// makeCgroups makes the machine's cgroup in every hierarchy, under the
// test's own cgroup, named after the work directory and the machine (so
// concurrent runs never share one).
func (m *machine) makeCgroups() {
	m.h.t.Helper()
	parents, err := cgroupHierarchies()
	if err != nil {
		m.h.t.Fatalf("machine %s: %v", m.name, err)
	}
	name := filepath.Base(m.h.dir) + "-" + m.name
	for _, parent := range parents {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			m.h.t.Fatalf("machine %s: making its cgroup: %v", m.name, err)
		}
		m.cgroups = append(m.cgroups, dir)
		// A new cpuset cgroup (v1) has no CPUs and no memory nodes: no
		// process may join it until it has its parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(parent, f))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				m.h.t.Fatalf("machine %s: %v", m.name, err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				m.h.t.Fatalf("machine %s: %s: %v", m.name, filepath.Join(dir, f), err)
			}
		}
	}
}

// removeCgroups removes the machine's cgroups, deepest first (the
// container's systemd, the kubelet and containerd make their own below).
// A cgroup that still holds a process is a leftover: reported, its
// processes killed, and removed all the same. Idempotent.
func (m *machine) removeCgroups() (leftovers []string, err error) {
	var errs []error
	for _, top := range m.cgroups {
		var dirs []string
		walkErr := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if walkErr != nil {
			errs = append(errs, walkErr)
			continue
		}
		for _, dir := range slices.Backward(dirs) {
			if pids := cgroupPIDs(dir); len(pids) > 0 {
				leftovers = append(leftovers, fmt.Sprintf("%s (PIDs %s)", dir, strings.Join(pids, " ")))
				for _, p := range pids {
					if pid, err := strconv.Atoi(p); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			if err := rmdirCgroup(dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(leftovers) > 0 {
		errs = append(errs, fmt.Errorf("%d cgroups still held processes", len(leftovers)))
	}
	return leftovers, errors.Join(errs...)
}

func cgroupPIDs(dir string) []string {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	return strings.Fields(string(data))
}

// rmdirCgroup removes an empty cgroup, waiting a little for a killed
// process to be gone (until then rmdir says EBUSY).
func rmdirCgroup(dir string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBootSmoke boots the image twice, in the test's network namespace:
//   - as a cloud-init OS, with a hand-written NoCloud seed: cloud-init must
//     finish without errors, having written a file, run its runcmd (a
//     marker) and enabled and started a unit through it, and set the
//     hostname from meta-data;
//   - as an Ignition OS (first boot, cloud-init disabled): a unit enabled
//     only by a preset, as Ignition enables units, must have run;
//
// and powers each off cleanly: nspawn exits 0, no process or cgroup left.
func TestBootSmoke(t *testing.T) {
	if os.Getenv(envInner) == "1" {
		bootSmoke(t)
		return
	}
	requireE2E(t)
	runIsolated(t, "TestBootSmoke", envRootfs+"="+buildRootfs(t))
}

// The smoke test's unit: what it ran, and as whom, where.
const smokeUnit = `[Unit]
Description=kubestrap e2e smoke unit

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo "ran as $(id -un) on $(hostname)" >/run/kubestrap-smoke'

[Install]
WantedBy=multi-user.target
`

func bootSmoke(t *testing.T) {
	h := newHarness(t)
	// The machines share this namespace: its lo must be up.
	h.setupNetwork()

	m := h.newMachine("e2e-boot-cloud-init")
	var unit strings.Builder
	for line := range strings.Lines(smokeUnit) {
		unit.WriteString("      " + line)
	}
	m.seedNoCloud("instance-id: e2e-boot-smoke-1\nlocal-hostname: e2e-smoke-host\n", `#cloud-config
write_files:
  - path: /etc/kubestrap-smoke/hello
    permissions: "0640"
    content: |
      hello from write_files
  - path: /etc/systemd/system/kubestrap-smoke.service
    permissions: "0644"
    content: |
`+unit.String()+`runcmd:
  - [sh, -c, 'echo "runcmd ran" >/var/lib/kubestrap-smoke-marker']
  - [systemctl, daemon-reload]
  - [systemctl, enable, --now, kubestrap-smoke.service]
`)
	h.boot(m)

	st := m.cloudInitStatus()
	if st.Status != "done" || len(st.Errors) > 0 || !strings.Contains(st.Detail, "DataSourceNoCloud") {
		t.Errorf("cloud-init status: %+v, want done, no errors, from DataSourceNoCloud", st)
	}
	if rec, ok := st.RecoverableErrors.(map[string]any); ok && len(rec) > 0 {
		t.Errorf("cloud-init recoverable errors: %v", rec)
	}
	if warnings := m.cloudInitWarnings(); len(warnings) > 0 {
		t.Errorf("cloud-init warned:\n%s", strings.Join(warnings, "\n"))
	}
	fi, err := os.Stat(m.path("/etc/kubestrap-smoke/hello"))
	if err != nil {
		t.Errorf("write_files: %v", err)
	} else if fi.Mode().Perm() != 0o640 {
		t.Errorf("write_files: /etc/kubestrap-smoke/hello has mode %v, want 0640", fi.Mode().Perm())
	}
	if got := m.run("cat", "/etc/kubestrap-smoke/hello"); got != "hello from write_files\n" {
		t.Errorf("write_files: /etc/kubestrap-smoke/hello holds %q", got)
	}
	if got := m.run("cat", "/var/lib/kubestrap-smoke-marker"); got != "runcmd ran\n" {
		t.Errorf("runcmd: marker holds %q", got)
	}
	checkSmokeUnit(t, m, "e2e-smoke-host")
	if got := strings.TrimSpace(m.run("hostname")); got != "e2e-smoke-host" {
		t.Errorf("hostname is %q, want meta-data's local-hostname e2e-smoke-host", got)
	}
	if got, err := os.ReadFile(m.path("/etc/hostname")); err != nil || strings.TrimSpace(string(got)) != "e2e-smoke-host" {
		t.Errorf("/etc/hostname: %q, %v; want e2e-smoke-host", got, err)
	}
	m.poweroff()

	// An Ignition OS: what Ignition leaves for the first boot is the unit
	// and its preset; systemd's first boot does the enabling.
	ig := h.newMachine("e2e-boot-ignition")
	ig.ignitionOS()
	writeFile(t, ig.path("/etc/systemd/system/kubestrap-smoke.service"), []byte(smokeUnit), 0o644)
	writeFile(t, ig.path("/etc/systemd/system-preset/20-ignition.preset"), []byte("enable kubestrap-smoke.service\n"), 0o644)
	h.boot(ig)
	if st := ig.cloudInitStatus(); st.Status != "disabled" {
		t.Errorf("Ignition OS: cloud-init status %q, want disabled", st.Status)
	}
	checkSmokeUnit(t, ig, "e2e-boot-ignition")
	if id := strings.TrimSpace(ig.run("cat", "/etc/machine-id")); len(id) != 32 {
		t.Errorf("Ignition OS: /etc/machine-id is %q after the first boot, want an ID", id)
	}
	ig.poweroff()
}

// checkSmokeUnit checks smokeUnit is enabled and ran, on host, and that
// systemd reached "running" (no unit failed).
func checkSmokeUnit(t *testing.T, m *machine, host string) {
	t.Helper()
	st := m.unitState("kubestrap-smoke.service")
	if st["ActiveState"] != "active" || st["SubState"] != "exited" || st["Result"] != "success" || st["UnitFileState"] != "enabled" {
		t.Errorf("machine %s: kubestrap-smoke.service: %v, want active (exited), success, enabled", m.name, st)
	}
	if got, want := m.run("cat", "/run/kubestrap-smoke"), "ran as root on "+host+"\n"; got != want {
		t.Errorf("machine %s: the unit wrote %q, want %q", m.name, got, want)
	}
	if j := m.journal("kubestrap-smoke.service"); !strings.Contains(j, "Finished kubestrap-smoke.service") {
		t.Errorf("machine %s: the unit's journal lacks its Finished line:\n%s", m.name, j)
	}
	if state, _ := m.exec("systemctl", "is-system-running"); strings.TrimSpace(state) != "running" {
		failed, _ := m.exec("systemctl", "--failed", "--no-legend")
		t.Errorf("machine %s: systemd is %q, want running; failed units:\n%s", m.name, strings.TrimSpace(state), failed)
	}
}
