package model

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every error Load returns for bad input, so
// the CLI can tell "fix your input" (exit 2, say) from everything else.
var ErrInvalid = errors.New("invalid input")

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
	var b strings.Builder
	if s := p.Pos.String(); s != "" {
		b.WriteString(s)
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Is makes a lone Problem match ErrInvalid, like Problems does.
func (p Problem) Is(target error) bool { return target == ErrInvalid }

// Problems is every problem found in one Load, in a stable order.
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

// report collects problems and knows where every value came from, so checks
// only name a path and get the most precise position available.
type report struct {
	probs Problems
	// pos maps a path to where its value was written; lookups fall back to
	// parent paths, and "" is the input file itself.
	pos map[string]Pos
	// bad holds paths whose value could not be decoded: checks on them (and
	// on anything under them) would only repeat the problem in other words.
	bad map[string]bool
}

func newReport() *report {
	return &report{pos: map[string]Pos{}, bad: map[string]bool{}}
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
	r.probs = append(r.probs, Problem{Pos: r.at(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// addAt records a problem at an explicit position, for problems about the
// input's form rather than about a value.
func (r *report) addAt(pos Pos, path, format string, args ...any) {
	r.probs = append(r.probs, Problem{Pos: pos, Path: path, Msg: fmt.Sprintf(format, args...)})
}

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
