package model

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalid is matched (errors.Is) by every error Load returns for bad input, so
// the CLI can tell "fix your input" (exit 2, say) from everything else.
var ErrInvalid = errors.New("invalid input")

// Limits on what Load says, so that no input can flood a terminal or a CI log:
// after maxProblems, one line counts the rest; a value quoted in a message
// shows its first maxQuoted characters; and no part of a message is longer
// than maxText bytes.
const (
	maxProblems = 100
	maxWarnings = 100
	maxQuoted   = 64
	maxText     = 1024
)

// Pos is where a value came from: a file and line, or a flag ("flag --ca-file",
// Line 0). A zero Pos means the problem has no single origin (e.g. neither -f nor
// --env given).
type Pos struct {
	File string
	Line int
}

// String renders the position the way compilers do, so editors can jump to it:
// "cluster.yaml:14", "flag --ca-file", or "" for the zero Pos.
func (p Pos) String() string {
	if p.File != "" && p.Line > 0 {
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return p.File
}

// Problem is one thing wrong with the input.
type Problem struct {
	Pos Pos
	// Path names the value in model terms ("nodes[2].ip", "kubelet.profile"), or,
	// for problems reading environment.sh, the shell variable ("KUBE_APISERVER").
	Path string
	Msg  string
}

// Error renders "file:line: path: msg", dropping the parts that are empty.
func (p Problem) Error() string {
	return joinParts(p.Pos.String(), p.Path, p.Msg)
}

func joinParts(parts ...string) string {
	var b strings.Builder
	for _, s := range parts {
		if s == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// Is makes a lone Problem match ErrInvalid, like Problems does.
func (p Problem) Is(target error) bool { return target == ErrInvalid }

// Problems is every problem found in one Load, sorted by position: problems
// without one first, then by file in the order the files were read, then by
// line. At most maxProblems are kept; a last entry without a position then
// says how many more there were.
type Problems []Problem

// Error joins the problems one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is ErrInvalid.
func (ps Problems) Is(target error) bool { return target == ErrInvalid }

// Warning is something Load accepts but the user must know about: a setting
// that opens the kubelet beyond the hardened profile, or a profile setting left
// out for the target version.
type Warning struct {
	// Pos is where the setting was made: a file and line, a flag, or the
	// profile that holds it ("profile legacy").
	Pos Pos
	// Path names the setting: in model terms for the input's settings
	// ("kubelet.config.readOnlyPort"), in KubeletConfiguration terms for a
	// profile's ("readOnlyPort"); empty when the warning is about no one value.
	Path string
	// Value is the setting's value as the config spells it ("10255").
	Value string
	Msg   string
}

// String renders "cluster.yaml:11: kubelet.config.readOnlyPort=10255: msg".
func (w Warning) String() string {
	setting := w.Path
	if w.Value != "" {
		setting += "=" + w.Value
	}
	return joinParts(w.Pos.String(), setting, w.Msg)
}

// report collects problems and knows where every value came from, so checks
// only name a path and get the most precise position available.
type report struct {
	// kept holds the problems that sort first so far; total counts all of
	// them. Keeping only the first few bounds memory for inputs with millions
	// of problems (a huge nodes file of bad rows).
	kept  []rankedProblem
	total int
	// files lists the input files in the order they were read; others ranks
	// the positions that are not read files (flags, CA sources) by first
	// appearance. Problems sort by these.
	files  []string
	others map[string]int
	// pos maps a path to where its value was written; lookups fall back to
	// parent paths, and "" is the input file itself.
	pos map[string]Pos
	// bad holds paths whose value could not be decoded: checks on them (and
	// on anything under them) would only repeat the problem in other words.
	bad map[string]bool
}

type rankedProblem struct {
	p               Problem
	tier, rank, seq int
}

func newReport() *report {
	return &report{pos: map[string]Pos{}, bad: map[string]bool{}, others: map[string]int{}}
}

// read records that file is an input, for the order of problems.
func (r *report) read(file string) {
	if !slices.Contains(r.files, file) {
		r.files = append(r.files, file)
	}
}

// at returns the position of path, or of its nearest recorded ancestor.
func (r *report) at(path string) Pos {
	for p := path; ; p = parentPath(p) {
		if pos, ok := r.pos[p]; ok {
			return pos
		}
		if p == "" {
			return Pos{}
		}
	}
}

func (r *report) isBad(path string) bool {
	for p := path; p != ""; p = parentPath(p) {
		if r.bad[p] {
			return true
		}
	}
	return false
}

// addf records a problem about path at path's position.
func (r *report) addf(path, format string, args ...any) {
	if r.isBad(path) {
		return
	}
	r.add(Problem{Pos: r.at(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// addAt records a problem at an explicit position, for problems about the
// input's form rather than about a value.
func (r *report) addAt(pos Pos, path, format string, args ...any) {
	r.add(Problem{Pos: pos, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (r *report) add(p Problem) {
	rp := rankedProblem{p: p, seq: r.total}
	r.total++
	switch {
	case p.Pos == Pos{}:
		// No position: keeps its place at the front.
	case slices.Contains(r.files, p.Pos.File):
		rp.tier, rp.rank = 1, slices.Index(r.files, p.Pos.File)
	default:
		rank, ok := r.others[p.Pos.File]
		if !ok {
			rank = len(r.others)
			r.others[p.Pos.File] = rank
		}
		rp.tier, rp.rank = 2, rank
	}
	r.kept = append(r.kept, rp)
	if len(r.kept) >= 4*maxProblems {
		r.compact()
	}
}

// compact sorts what is kept and drops all but the first maxProblems.
func (r *report) compact() {
	slices.SortFunc(r.kept, func(a, b rankedProblem) int {
		return cmp.Or(cmp.Compare(a.tier, b.tier), cmp.Compare(a.rank, b.rank),
			cmp.Compare(a.p.Pos.Line, b.p.Pos.Line), cmp.Compare(a.seq, b.seq))
	})
	r.kept = r.kept[:min(len(r.kept), maxProblems)]
}

func (r *report) count() int { return r.total }

// problems returns what Load reports: sorted, cut at maxProblems, every text
// made safe to print.
func (r *report) problems() Problems {
	r.compact()
	ps := make(Problems, 0, len(r.kept)+1)
	for _, rp := range r.kept {
		p := rp.p
		p.Pos.File = printable(p.Pos.File, maxText)
		p.Path = printable(p.Path, maxText/4)
		p.Msg = printable(p.Msg, maxText)
		ps = append(ps, p)
	}
	if more := r.total - len(r.kept); more > 0 {
		ps = append(ps, Problem{Msg: fmt.Sprintf("… and %d more problems", more)})
	}
	return ps
}

// quote renders a value for a message: Go-quoted, so that control and
// invisible characters show, and cut after maxQuoted characters so that one
// huge value cannot flood the output.
func quote(s string) string {
	n := 0
	for i := range s {
		if n == maxQuoted {
			return strconv.Quote(s[:i]) + "…"
		}
		n++
	}
	return strconv.Quote(s)
}

// printable escapes control characters, which messages quote from inputs
// and libraries' errors, so that a message cannot move the terminal's cursor
// or forge a line; and it cuts the text at max bytes.
func printable(s string, max int) string {
	clean := true
	for _, c := range s {
		if isControl(c) || c == utf8.RuneError {
			clean = false
			break
		}
	}
	if !clean {
		var b strings.Builder
		for _, c := range s {
			switch {
			case c == utf8.RuneError:
				b.WriteString(`\ufffd`)
			case isControl(c):
				fmt.Fprintf(&b, `\x%02x`, c)
			default:
				b.WriteRune(c)
			}
		}
		s = b.String()
	}
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// isControl reports the C0 controls and DEL: what ends or rewrites a line in
// systemd units, YAML, kubeconfigs and terminals.
func isControl(c rune) bool { return c < 0x20 || c == 0x7f }

// forget drops what is known about path and everything under it, for when a
// later source (--nodes) replaces a value wholesale.
func (r *report) forget(path string) {
	under := func(p string) bool {
		return p == path || strings.HasPrefix(p, path+".") || strings.HasPrefix(p, path+"[")
	}
	for p := range r.pos {
		if under(p) {
			delete(r.pos, p)
		}
	}
	for p := range r.bad {
		if under(p) {
			delete(r.bad, p)
		}
	}
}

// childPath names key under path. Keys that are not plain identifiers (label
// keys like "node.kubernetes.io/role") are quoted in brackets so the path stays
// unambiguous and parentPath can undo it.
func childPath(path, key string) string {
	if isIdent(key) {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	return fmt.Sprintf("%s[%q]", path, key)
}

func indexPath(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (c == '-' || c >= '0' && c <= '9'):
		default:
			return false
		}
	}
	return true
}

// parentPath undoes childPath and indexPath; the parent of a top-level field is "".
func parentPath(p string) string {
	if strings.HasSuffix(p, `"]`) {
		// A Go-quoted key escapes its quotes, so `["` only opens one.
		if i := strings.LastIndex(p, `["`); i >= 0 {
			return p[:i]
		}
	}
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndex(p, "["); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndex(p, "."); i >= 0 {
		return p[:i]
	}
	return ""
}
