// Package output writes a run's documents to disk so that a reader sees all
// of them or none, and so that nothing but kubestrap's own output is ever
// replaced or deleted.
//
// Everything is written into a private staging directory beside the target,
// .<base>.kubestrap-<random>, which takes the target's place at Commit only
// when every file is written. Commit also writes a manifest at the top of the
// output, .kubestrap-output, listing every entry the run wrote. An existing,
// non-empty target is replaced (with force) only when everything in it is
// listed in its manifest with the same type and size, and removing it once
// the new output is in place goes by that list too: an entry it does not list
// is never deleted but kept beside the target, in
// .<base>.kubestrap-kept-<random>.
//
// On unix the target's parent is opened once, by the path the user gave, and
// everything after that goes through directory descriptors (openat, mkdirat,
// renameat, unlinkat, O_NOFOLLOW throughout), so swapping a directory for a
// symlink mid-run cannot redirect a write or a removal. Directories are 0700
// and files have exactly the mode asked for, whatever the umask. A run holds
// flock on its staging directory until Commit or Abort, so the next run into
// the same target tells a killed run's staging directory from one being
// written, and removes the former (see Stage.Warnings); where flock is not
// supported (AIX, some network filesystems) staging directories found are
// left and reported instead. On Linux Commit
// flushes everything with one syncfs and swaps an existing target out with
// renameat2(RENAME_EXCHANGE); on other systems (or filesystems without the
// exchange) each file and directory is fsynced and the old target is renamed
// aside before the new one is renamed in, so a crash between the two renames
// leaves no target, and the old output under a staging name, which the next
// run removes by its manifest.
//
// Elsewhere (Windows) the same steps go through os.Root, which refuses paths
// that leave the target's parent, through symlinks or otherwise, but with
// what the platform allows:
//   - there is no flock: a staging directory found beside the target is
//     reported in Stage.Warnings, never removed, since it may be another
//     run's;
//   - there is no atomic exchange: an old target is always renamed aside
//     first, and it is checked, removed and kept by name within the parent;
//   - modes are what Windows approximates (os.Chmod's read-only bit); who can
//     read the files is decided by the parent directory's ACL;
//   - files are flushed one by one; directories cannot be.
package output

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// ErrExists means the target directory holds files and --force was not given.
var ErrExists = errors.New("output directory exists and is not empty (use --force to replace it)")

// ErrNotOurs means the target, or something in it, was not written by
// kubestrap, so even --force does not replace it. It is the user's to sort
// out, like bad input.
var ErrNotOurs = errors.New("not kubestrap's output")

// DirMode is the mode of every directory written: the documents hold tokens.
const DirMode fs.FileMode = 0o700

// manifestName is the manifest's name at the top of an output.
const manifestName = ".kubestrap-output"

// stagingMark is the file a run makes first in its staging directory, and
// removes just before putting it in place: a directory of a staging name
// without it (and without a manifest) was not made by kubestrap, and is
// never removed as an interrupted run's.
const stagingMark = ".kubestrap-staging"

// errNotStaging means a directory with a staging name holds neither the
// mark of a run nor a manifest.
var errNotStaging = errors.New("it has a kubestrap staging name, but kubestrap did not make it")

const manifestHeader = "# kubestrap output: generate --force replaces a directory only when everything in it is listed here\n"

// File is one file to write inside a directory of the output.
type File struct {
	Name string // a single path component
	Data []byte
	Mode fs.FileMode // permission bits only
}

// CleanupError is a failure after Commit put the new output in place (while
// removing the old one or syncing the parent directory): the output is
// complete, so the run succeeded and the caller should only warn.
type CleanupError struct{ Err error }

func (e *CleanupError) Error() string { return "after writing the output: " + e.Err.Error() }
func (e *CleanupError) Unwrap() error { return e.Err }

// notOursError is a refusal that is ErrNotOurs without repeating its text.
type notOursError struct{ msg string }

func (e *notOursError) Error() string        { return e.msg }
func (e *notOursError) Is(target error) bool { return target == ErrNotOurs }

func notOurs(format string, args ...any) error {
	return &notOursError{fmt.Sprintf(format, args...)}
}

// Stage is an output directory being written.
type Stage struct {
	name     string   // the target as given, for messages
	abs      string   // the target's absolute path
	base     string   // the target's name in its parent
	staging  string   // the staging directory's name in the parent
	old      manifest // what an existing target holds of ours; nil if there is none
	warnings []string

	// life is held shared by every write and exclusively by Commit and
	// Abort, so that no write uses a descriptor they closed.
	life sync.RWMutex
	done bool // Commit or Abort ran

	// failed is set by a write that failed: the output is incomplete and
	// Commit refuses it.
	failed atomic.Bool

	mu      sync.Mutex
	written manifest // what the run wrote, for the manifest

	// renameAside makes Commit move an old target aside instead of
	// exchanging it (tests, for the path other systems take).
	renameAside bool

	sys sysStage // the platform's handles
}

// newStage makes the platform-independent part of Begin: the stage's names
// and the target's parent directory.
func newStage(target string) (*Stage, string, error) {
	name := filepath.Clean(target)
	// Absolute, so that "." or "sub/.." have a real parent for the stage.
	abs, err := filepath.Abs(target)
	if err != nil {
		return nil, "", err
	}
	parent := filepath.Dir(abs)
	if parent == abs {
		return nil, "", notOurs("%s: cannot replace the root directory", name)
	}
	return &Stage{name: name, abs: abs, base: filepath.Base(abs), written: manifest{}}, parent, nil
}

// checkNotWorkingDir refuses to replace the directory this process (and
// the shell that started it) stands in, or one that holds it: both would be
// left in a deleted directory, where the next step, kubectl apply -f
// tokens.yaml, finds nothing. Begin asks once it knows the target may be
// replaced, so that a directory that is not kubestrap's says so first.
func (s *Stage) checkNotWorkingDir() error {
	wd, err := os.Getwd()
	if err == nil && (wd == s.abs || strings.HasPrefix(wd, s.abs+string(filepath.Separator))) {
		return notOurs("%s: is the current directory or holds it; give it from outside it (cd ..; --out %s)", s.name, s.base)
	}
	return nil
}

// Warnings are what Begin found and dealt with that the user should hear
// about: staging directories of interrupted runs, removed or kept.
func (s *Stage) Warnings() []string { return slices.Clone(s.warnings) }

func (s *Stage) warn(format string, args ...any) {
	s.warnings = append(s.warnings, fmt.Sprintf(format, args...))
}

// WriteFile writes rel, "name" at the top of the output or "dir/name", with
// mode, creating dir 0700 if no earlier write did. It is safe for concurrent
// use; WriteFiles does the same for a whole directory with fewer system
// calls.
func (s *Stage) WriteFile(rel string, data []byte, mode fs.FileMode) error {
	dir, name, err := splitRel(rel)
	if err != nil {
		return err
	}
	return s.writeFiles(dir, []File{{Name: name, Data: data, Mode: mode}}, true)
}

// WriteFiles creates the directory dir (one path component) in the output,
// 0700, and writes files into it, each created exclusively. Safe for
// concurrent use (different dirs from different goroutines).
func (s *Stage) WriteFiles(dir string, files []File) error {
	if dir == "" {
		return s.fail(errors.New(`output directory name "" is not a valid name`))
	}
	return s.writeFiles(dir, files, false)
}

// checkFiles checks the names a write is given, before it touches anything.
func checkFiles(dir string, files []File) error {
	if dir != "" {
		if err := checkTop(dir); err != nil {
			return err
		}
	}
	for _, f := range files {
		var err error
		if dir == "" {
			err = checkTop(f.Name)
		} else {
			err = checkName(f.Name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// fail marks the stage as not committable and returns err.
func (s *Stage) fail(err error) error {
	s.failed.Store(true)
	return err
}

var errDone = errors.New("output already committed or aborted")

// manifest is what Commit writes at the top of the output, or why there is
// nothing to commit.
func (s *Stage) manifest() ([]byte, error) {
	if s.failed.Load() {
		return nil, fmt.Errorf("%s: not written: a write failed", s.name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written.encode(), nil
}

// discard removes the staging tree and returns err, or the removal's error
// with it.
func (s *Stage) discard(err error) error {
	if rerr := s.removeStaging(); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// Abort removes everything staged; the target is untouched. After Commit or
// another Abort it does nothing.
func (s *Stage) Abort() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.done {
		return nil
	}
	s.done = true
	defer s.sys.closeAll()
	return s.removeStaging()
}

// record adds what a write made to the manifest to be.
func (s *Stage) record(dir string, files []File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dir != "" {
		s.written[dir] = entry{dir: true}
	}
	for _, f := range files {
		s.written[join(dir, f.Name)] = entry{size: int64(len(f.Data)), sum: checksum(f.Data)}
	}
}

func (s *Stage) recordFile(rel string, size int64, sum uint32) {
	s.mu.Lock()
	s.written[rel] = entry{size: size, sum: sum}
	s.mu.Unlock()
}

// join is the path of name in dir ("" at the top) of the output.
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// splitRel splits a slash-separated path of the output into its directory
// ("" at the top) and name: the output is at most one directory deep.
func splitRel(rel string) (dir, name string, err error) {
	dir, name, ok := strings.Cut(rel, "/")
	if !ok {
		dir, name = "", rel
	}
	if strings.Contains(name, "/") {
		return "", "", fmt.Errorf("output path %q: at most one directory deep", rel)
	}
	if dir == "" && ok {
		return "", "", fmt.Errorf("output path %q: not a valid name", rel)
	}
	return dir, name, nil
}

// checkName accepts name as one path component of the output. The manifest
// holds one space-separated entry per line, so a name with whitespace or a
// control character could not be listed unambiguously.
func checkName(name string) error {
	switch {
	case name == "", name == ".", name == "..",
		strings.ContainsAny(name, `/\`),
		!utf8.ValidString(name),
		strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }),
		!filepath.IsLocal(name): // Windows' reserved names
		return fmt.Errorf("output name %q is not a valid name", name)
	}
	return nil
}

// checkTop is checkName for an entry at the top of the output, where the
// manifest's name is taken.
func checkTop(name string) error {
	switch name {
	case manifestName:
		return fmt.Errorf("output name %q is kubestrap's manifest", name)
	case stagingMark:
		return fmt.Errorf("output name %q is kubestrap's mark of a staging directory", name)
	}
	return checkName(name)
}

func stagingPrefix(base string) string { return "." + base + ".kubestrap-" }

// randomName is a fresh name beside the target: staging directories, old
// outputs moved aside, and kept leftovers.
func randomName(prefix string) string {
	return prefix + strconv.FormatUint(rand.Uint64(), 36)
}

// isStagingName reports whether name is a staging directory of base's, as
// randomName makes them: the kept leftovers' "kept-" and other targets'
// longer names (".out.kubestrap-x.kubestrap-…") do not match.
func isStagingName(name, base string) bool {
	suffix, ok := strings.CutPrefix(name, stagingPrefix(base))
	return ok && suffix != "" && !strings.ContainsFunc(suffix, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'z')
	})
}

// listNames names at most ten entries, so that a refusal stays readable
// when the user's directory is large.
func listNames(names []string) string {
	const most = 10
	if len(names) <= most {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
}

// entry is what the manifest says of one path: a directory, or a file of a
// size and a checksum.
type entry struct {
	dir  bool
	size int64
	sum  uint32
}

// checksum is a file's CRC-32C. It tells a document kubestrap wrote from one
// edited by hand since, whose size an edit need not change (a digit of an
// address, true for false); it is no defence against someone who may write
// the manifest too, who could delete the files anyway. CRC-32C is hashed by
// the CPU at several GB/s, where SHA-256 would add a tenth to a large run.
func checksum(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// updateChecksum continues sum over b, for files written in pieces.
func updateChecksum(sum uint32, b []byte) uint32 {
	return crc32.Update(sum, crc32.MakeTable(crc32.Castagnoli), b)
}

// manifest maps slash-separated paths inside an output to their entries.
type manifest map[string]entry

func (m manifest) encode() []byte {
	b := make([]byte, 0, len(manifestHeader)+len(m)*32)
	b = append(b, manifestHeader...)
	for _, p := range slices.Sorted(maps.Keys(m)) {
		e := m[p]
		if e.dir {
			b = append(b, "d "...)
		} else {
			b = append(b, "f "...)
			b = strconv.AppendInt(b, e.size, 10)
			b = fmt.Appendf(b, " %08x ", e.sum)
		}
		b = append(b, p...)
		b = append(b, '\n')
	}
	return b
}

func parseManifest(b []byte) (manifest, error) {
	m := manifest{}
	n := 0
	for line := range strings.Lines(string(b)) {
		n++
		line = strings.TrimSuffix(line, "\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, p, _ := strings.Cut(line, " ")
		var e entry
		switch kind {
		case "d":
			e.dir = true
		case "f":
			size, rest, _ := strings.Cut(p, " ")
			sum, rest, _ := strings.Cut(rest, " ")
			v, err := strconv.ParseInt(size, 10, 64)
			c, cerr := strconv.ParseUint(sum, 16, 32)
			if err != nil || v < 0 || cerr != nil || len(sum) != 8 {
				return nil, fmt.Errorf("line %d: %q is not an entry", n, line)
			}
			e.size, e.sum, p = v, uint32(c), rest
		default:
			return nil, fmt.Errorf("line %d: %q is not an entry", n, line)
		}
		for c := range strings.SplitSeq(p, "/") {
			if checkName(c) != nil {
				return nil, fmt.Errorf("line %d: %q is not an entry", n, line)
			}
		}
		if _, dup := m[p]; dup || p == manifestName {
			return nil, fmt.Errorf("line %d: %q is listed twice", n, p)
		}
		m[p] = e
	}
	return m, nil
}

// The kinds of entries dirHandle.lstat reports.
const (
	kindFile  = 'f'
	kindDir   = 'd'
	kindOther = '?' // symlinks, devices, …: never kubestrap's
)

// dirHandle is an open directory, on unix a descriptor: the checks and
// removals below go through it, never by a path from the top, and never
// follow a symlink.
type dirHandle interface {
	names() ([]string, error)
	lstat(name string) (kind byte, size int64, err error)
	openDir(name string) (dirHandle, error)
	// readFile reads a regular file (not a symlink's target).
	readFile(name string) ([]byte, error)
	remove(name string, isDir bool) error
	close() error
}

// checkOld decides whether the existing directory d may be replaced: an
// empty one may, and with force one that holds only what its manifest
// lists. It returns what may be removed once it is replaced.
func (s *Stage) checkOld(d dirHandle, force bool) (manifest, error) {
	names, err := d.names()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	if len(names) == 0 {
		return manifest{}, nil
	}
	if !force {
		return nil, fmt.Errorf("%s: %w", s.name, ErrExists)
	}
	m, err := readManifest(d)
	if err != nil {
		return nil, notOurs("%s: %s", s.name, err)
	}
	var others []string
	if err := strangers(d, "", m, &others); err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	if len(others) > 0 {
		return nil, notOurs("%s: --force replaces only what kubestrap wrote, and %s holds other entries: %s",
			s.name, s.name, listNames(others))
	}
	return m, nil
}

// readManifest reads d's manifest; one that is missing or not a regular file
// lists nothing, and is then listed as an entry that is not ours. The
// manifest lists itself, with the size it has now.
func readManifest(d dirHandle) (manifest, error) {
	kind, _, err := d.lstat(manifestName)
	if errors.Is(err, fs.ErrNotExist) || err == nil && kind != kindFile {
		return manifest{}, nil
	}
	if err != nil {
		return nil, err
	}
	b, err := d.readFile(manifestName)
	if err != nil {
		return nil, err
	}
	m, err := parseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", manifestName, err)
	}
	m[manifestName] = entry{size: int64(len(b)), sum: checksum(b)}
	return m, nil
}

// strangers appends to others the paths under d (below prefix) that m does
// not list with the same type and size. It does not descend into
// directories that are not listed: naming them is enough.
func strangers(d dirHandle, prefix string, m manifest, others *[]string) error {
	names, err := d.names()
	if err != nil {
		return fmt.Errorf("%s: %w", where(prefix), err)
	}
	slices.Sort(names)
	for _, n := range names {
		p := prefix + n
		kind, size, err := d.lstat(n)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		e, listed := m[p]
		switch {
		case !listed:
			*others = append(*others, p)
		case e.dir && kind == kindDir:
			sub, err := d.openDir(n)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			err = strangers(sub, p+"/", m, others)
			sub.close()
			if err != nil {
				return err
			}
		case !e.dir && unchanged(d, n, e, kind, size):
		default:
			*others = append(*others, p+" (changed)")
		}
	}
	return nil
}

// unchanged reports whether the file name in d (of kind and size, as lstat
// said) is what e lists: a regular file of its size and checksum.
func unchanged(d dirHandle, name string, e entry, kind byte, size int64) bool {
	if kind != kindFile || size != e.size {
		return false
	}
	b, err := d.readFile(name)
	return err == nil && int64(len(b)) == e.size && checksum(b) == e.sum
}

// removeListed removes from d what m lists with the same type and size,
// directories once they are empty, and appends to kept what it leaves (with
// why, when removing failed).
func removeListed(d dirHandle, prefix string, m manifest, kept *[]string) {
	names, err := d.names()
	if err != nil {
		*kept = append(*kept, fmt.Sprintf("%s (%v)", where(prefix), err))
		return
	}
	slices.Sort(names)
	for _, n := range names {
		p := prefix + n
		kind, size, err := d.lstat(n)
		e, listed := m[p]
		switch {
		case err != nil:
			*kept = append(*kept, fmt.Sprintf("%s (%v)", p, err))
		case listed && !e.dir && unchanged(d, n, e, kind, size):
			if err := d.remove(n, false); err != nil {
				*kept = append(*kept, fmt.Sprintf("%s (%v)", p, err))
			}
		case listed && e.dir && kind == kindDir:
			sub, err := d.openDir(n)
			if err != nil {
				*kept = append(*kept, fmt.Sprintf("%s (%v)", p, err))
				continue
			}
			before := len(*kept)
			removeListed(sub, p+"/", m, kept)
			sub.close()
			if len(*kept) > before {
				continue
			}
			// Not empty means something appeared since the listing: kept.
			if err := d.remove(n, true); err != nil {
				*kept = append(*kept, fmt.Sprintf("%s (%v)", p, err))
			}
		default:
			*kept = append(*kept, p)
		}
	}
}

// removeAll removes everything under d, without following symlinks.
func removeAll(d dirHandle, prefix string) error {
	names, err := d.names()
	if err != nil {
		return fmt.Errorf("%s: %w", where(prefix), err)
	}
	for _, n := range names {
		p := prefix + n
		kind, _, err := d.lstat(n)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if kind == kindDir {
			sub, err := d.openDir(n)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			err = removeAll(sub, p+"/")
			sub.close()
			if err != nil {
				return err
			}
		}
		if err := d.remove(n, kind == kindDir); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// clearStale empties an interrupted run's staging directory d. While it
// holds the run's mark, the run made everything in it, and all of it goes;
// without the mark but with a manifest it may be a replaced output moved
// aside, so it goes by the manifest and returns what it kept; with neither
// it is not kubestrap's (errNotStaging) and nothing goes.
func clearStale(d dirHandle) ([]string, error) {
	if kind, _, err := d.lstat(stagingMark); err == nil && kind == kindFile {
		// A run's own private directory: everything in it is the run's.
		return nil, removeAll(d, "")
	}
	kind, _, err := d.lstat(manifestName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotStaging
	}
	if err != nil {
		return nil, err
	}
	var m manifest
	if kind == kindFile {
		if m, err = readManifest(d); err != nil {
			return nil, err
		}
	}
	var kept []string
	removeListed(d, "", m, &kept)
	return kept, nil
}

// where names the directory prefix stands for, in messages.
func where(prefix string) string {
	if prefix == "" {
		return "."
	}
	return strings.TrimSuffix(prefix, "/")
}

// keptMessage says where an old output's leftovers are.
func keptMessage(name, keptName string, kept []string) string {
	return fmt.Sprintf("%s: the replaced output held entries kubestrap did not write; they are kept in %s: %s",
		name, keptName, listNames(kept))
}
