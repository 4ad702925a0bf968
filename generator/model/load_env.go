package model

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"
)

// The guide's variables that kubestrap reads.
const (
	envNodeNames  = "NODE_NAMES"
	envNodeIPs    = "NODE_IPS"
	envAPIServer  = "KUBE_APISERVER"
	envDNS        = "CLUSTER_DNS_SVC_IP"
	envDomain     = "CLUSTER_DNS_DOMAIN"
	envServiceNet = "SERVICE_CIDR"
	envPodNet     = "CLUSTER_CIDR"
)

var (
	errCmdSubst  = errors.New("command substitution refused")
	errProcSubst = errors.New("process substitution refused")
)

// Bounds on evaluating the file. Every value kubestrap reads is short, and
// even a 20,000-node NODE_NAMES array is some 300 KB; without them, 41 lines
// of X=$X$X would need 2^41 bytes.
const (
	// maxEnvFileSize caps environment.sh below maxFileSize: the shell parser
	// recurses once per nesting level, with up to ~170 bytes of stack per
	// byte of input even when maxShellGroups holds.
	maxEnvFileSize = 1 << 20
	// maxShellGroups caps ( { [ ` and ! in the file: each can open a level
	// of the parser's recursion, at up to 2.7 KB of stack each, and a stack
	// overflow cannot be recovered from. Kubestrap's variables need a few.
	maxShellGroups = 10_000
	// maxValueSize caps a variable's value (an array's, all elements).
	maxValueSize = 1 << 20
	// maxAssignRead caps what one assignment reads from other variables, and
	// maxFileRead what the whole file does, so that neither a line like
	// Y=$X$X$X$X nor many lines of Y=$X can multiply the file's size.
	maxAssignRead = 1 << 20
	maxFileRead   = 8 << 20
	// maxFields caps the words one array assignment's brace expansions make.
	maxFields = 100_000
)

// shellVar is one variable as the file leaves it.
type shellVar struct {
	name string
	val  expand.Variable
	line int
	// elemLines holds each array element's line, for arrays written over
	// several lines.
	elemLines []int
	// unknown says why the value cannot be known without running something
	// ("needs a command substitution ..."); "" when the value is known.
	unknown string
	// root is the variable whose own value is unknown, at the start of a
	// chain like B=$A, C=$B: messages name it and the first link only, so
	// they stay short however long the chain.
	root *shellVar
}

// size is what reading the variable hands out, in bytes.
func (v *shellVar) size() int {
	n := len(v.val.Str)
	for _, e := range v.val.List {
		n += len(e) + 1
	}
	return n
}

// shellEnv is the expand.Environ the file's own assignments build up. It never
// falls back to the process environment: the values must be the file's, not
// whatever the machine running kubestrap happens to have.
type shellEnv struct {
	vars map[string]*shellVar
	// touched lists the variables read by the current expansion, to carry
	// "unknown" from MASTER_IP=$(...) over to KUBE_APISERVER=https://$MASTER_IP.
	touched []string
	// assignLeft and fileLeft are the bytes that reads may still hand out,
	// to this assignment and to the rest of the file; overdrawn names the
	// budget a read found empty.
	assignLeft, fileLeft int
	overdrawn            string
}

func (e *shellEnv) Get(name string) expand.Variable {
	e.touched = append(e.touched, name)
	v, ok := e.vars[name]
	if !ok || v.unknown != "" || !e.spend(v.size()) {
		// An unknown value makes the assignment unknown (see touched), so
		// reading it would only cost.
		return expand.Variable{}
	}
	return v.val
}

func (e *shellEnv) Each(fn func(string, expand.Variable) bool) {
	for _, name := range slices.Sorted(maps.Keys(e.vars)) {
		// ${!prefix*} hands out names.
		if !e.spend(len(name)+1) || !fn(name, e.vars[name].val) {
			return
		}
	}
}

func (e *shellEnv) spend(n int) bool {
	switch {
	case n > e.assignLeft:
		e.overdrawn = fmt.Sprintf("it reads more than %d MiB of other variables", maxAssignRead>>20)
	case n > e.fileLeft:
		e.overdrawn = fmt.Sprintf("the file's assignments before it read more than %d MiB of variables in all", maxFileRead>>20)
	default:
		e.assignLeft -= n
		e.fileLeft -= n
		return true
	}
	return false
}

// readEnvFile evaluates the top-level assignments of a shell file without
// running anything. It returns nil only when the file cannot be parsed.
func readEnvFile(file string, r *report) *shellEnv {
	data, err := readInput(file, maxEnvFileSize)
	if err != nil {
		r.addAt(flagPos(flagEnvFile), "", "%v", err)
		return nil
	}
	r.read(file)
	if line := tooManyGroups(data); line > 0 {
		r.addAt(Pos{File: file, Line: line}, "", "more than %d of ( { [ ` and ! in the file: kubestrap reads plain assignments, "+
			"and the shell parser's stack grows with each level of nesting", maxShellGroups)
		return nil
	}
	prog, err := parseShell(data, file)
	if err != nil {
		r.add(shellSyntaxProblem(file, err))
		return nil
	}
	env := &shellEnv{vars: map[string]*shellVar{}, fileLeft: maxFileRead}
	// Only top-level statements: an assignment inside "if" or a function
	// depends on what running the file would do.
	for _, st := range prog.Stmts {
		switch cmd := st.Cmd.(type) {
		case *syntax.CallExpr:
			if len(cmd.Args) == 0 {
				for _, as := range cmd.Assigns {
					env.assign(as)
				}
			} else if lit := cmd.Args[0].Lit(); lit == "unset" {
				for _, w := range cmd.Args[1:] {
					delete(env.vars, w.Lit())
				}
			}
			// "X=v cmd" sets X for cmd alone; other commands are not run.
		case *syntax.DeclClause:
			switch cmd.Variant.Value {
			case "export", "declare", "typeset", "readonly":
				if isNameref(cmd) {
					continue
				}
				for _, as := range cmd.Args {
					env.assign(as)
				}
			}
		}
	}
	return env
}

// tooManyGroups returns the line of the character that takes the file past
// maxShellGroups, or 0. It counts everywhere, quotes and comments included:
// an overcount costs nothing, and telling what the parser will nest would
// take the parser.
func tooManyGroups(data []byte) int {
	n, line := 0, 1
	for _, b := range data {
		switch b {
		case '\n':
			line++
		case '(', '{', '[', '`', '!':
			if n++; n > maxShellGroups {
				return line
			}
		}
	}
	return 0
}

// parseShell runs mvdan.cc/sh's parser, turning a panic in it (a bug there,
// which some inputs reach) into an error about the file.
func parseShell(data []byte, file string) (prog *syntax.File, err error) {
	defer func() {
		if p := recover(); p != nil {
			prog, err = nil, fmt.Errorf("the shell parser failed on this file: %v", p)
		}
	}()
	return syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(bytes.NewReader(data), file)
}

func isNameref(d *syntax.DeclClause) bool {
	for _, as := range d.Args {
		if as.Name == nil && as.Value != nil {
			if flag := as.Value.Lit(); strings.HasPrefix(flag, "-") && strings.Contains(flag, "n") {
				return true
			}
		}
	}
	return false
}

func shellSyntaxProblem(file string, err error) Problem {
	var pe syntax.ParseError
	if errors.As(err, &pe) {
		return Problem{Pos: Pos{File: file, Line: int(pe.Pos.Line())}, Msg: pe.Text}
	}
	var le syntax.LangError
	if errors.As(err, &le) {
		msg := strings.TrimPrefix(le.Error(), fmt.Sprintf("%s:%s: ", file, le.Pos))
		return Problem{Pos: Pos{File: file, Line: int(le.Pos.Line())}, Msg: msg}
	}
	return Problem{Pos: Pos{File: file}, Msg: err.Error()}
}

func (e *shellEnv) assign(as *syntax.Assign) {
	if as.Name == nil || as.Naked {
		// Flags ("declare -a") and "export X" change attributes, not values.
		return
	}
	name := as.Name.Value
	line := int(as.Pos().Line())
	v := &shellVar{name: name, line: line, val: expand.Variable{Set: true, Kind: expand.String}}
	v.root = v
	e.touched = e.touched[:0]
	e.assignLeft, e.overdrawn = maxAssignRead, ""
	err := refuseExpansions(as)
	if err == nil {
		err = e.evaluate(as, v)
	}
	switch {
	case errors.Is(err, errCmdSubst):
		v.unknown = "needs a command substitution ($(...)); kubestrap never runs commands from this file"
	case errors.Is(err, errProcSubst):
		v.unknown = "needs a process substitution (<(...)); kubestrap never runs commands from this file"
	case err != nil:
		v.unknown = "cannot be evaluated: " + err.Error()
	case e.overdrawn != "":
		v.unknown = "cannot be evaluated: " + e.overdrawn
	default:
		for _, dep := range e.touched {
			d, ok := e.vars[dep]
			if !ok || d.unknown == "" {
				continue
			}
			v.root = d.root
			if d.root == d {
				v.unknown = fmt.Sprintf("needs %s (line %d), whose value %s", dep, d.line, d.unknown)
			} else {
				v.unknown = fmt.Sprintf("needs %s (line %d), which needs %s (line %d), whose value %s",
					dep, d.line, d.root.name, d.root.line, d.root.unknown)
			}
			break
		}
	}
	if old, ok := e.vars[name]; ok && as.Append && v.unknown == "" {
		v = appendVar(old, v)
	}
	if v.unknown == "" && v.size() > maxValueSize {
		v = &shellVar{name: name, line: line, unknown: fmt.Sprintf("cannot be evaluated: its value would be longer than %d MiB", maxValueSize>>20)}
		v.root = v
	}
	e.vars[name] = v
}

// evaluate expands the assignment's value into v. mvdan.cc/sh's expander
// panics on some forms it parses (${X@A$}); that makes the variable unknown
// rather than the run crash, and only matters if kubestrap needs it.
func (e *shellEnv) evaluate(as *syntax.Assign, v *shellVar) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the shell library failed on it: %v", p)
		}
	}()
	cfg := &expand.Config{
		Env: e,
		CmdSubst: func(io.Writer, *syntax.CmdSubst) error {
			return errCmdSubst
		},
		ProcSubst: func(*syntax.ProcSubst) (string, error) {
			return "", errProcSubst
		},
	}
	switch {
	case as.Index != nil:
		return fmt.Errorf("element assignments (%s[i]=...) are not supported", as.Name.Value)
	case as.Array != nil:
		v.val.Kind = expand.Indexed
		for _, el := range as.Array.Elems {
			if el.Index != nil {
				return fmt.Errorf("arrays with explicit indexes or keys are not supported")
			}
			fields, err := expand.Fields(cfg, el.Value)
			if err != nil {
				return err
			}
			v.val.List = append(v.val.List, fields...)
			for range fields {
				v.elemLines = append(v.elemLines, int(el.Value.Pos().Line()))
			}
		}
		return nil
	default:
		v.val.Str, err = expand.Literal(cfg, as.Value)
		return err
	}
}

// refuseExpansions refuses, before anything is expanded, the forms whose
// output has no bound in the input's size: they would make a short file
// exhaust memory. Reads of variables are bounded by the read budgets, and a
// single ${X/pattern/string} by them too (its output is at most X and string
// together); these are not:
//   - ${X//pattern/string} puts string in at every match of pattern in X;
//   - ${A[@]/pattern/string} does it once per element of A;
//   - brace expansion multiplies ({a,b}{c,d}...) or counts ({1..100000000}).
func refuseExpansions(as *syntax.Assign) error {
	var err error
	check := func(node syntax.Node) bool {
		if err != nil {
			return false
		}
		pe, ok := node.(*syntax.ParamExp)
		if !ok || pe.Repl == nil || pe.Param == nil {
			return true
		}
		all := pe.Param.Value == "@" || pe.Param.Value == "*"
		if idx, ok := pe.Index.(*syntax.Word); ok {
			all = all || idx.Lit() == "@" || idx.Lit() == "*"
		}
		switch {
		case pe.Repl.All:
			err = fmt.Errorf("${%s//pattern/string} is refused: its output can grow without bound", pe.Param.Value)
		case all:
			err = fmt.Errorf("${%s[@]/pattern/string} is refused: its output can grow without bound", pe.Param.Value)
		}
		return err == nil
	}
	if as.Value != nil {
		syntax.Walk(as.Value, check)
	}
	if as.Array != nil {
		fields := uint64(0)
		for _, el := range as.Array.Elems {
			if el.Value == nil {
				continue
			}
			syntax.Walk(el.Value, check)
			if fields += braceFields(el.Value); fields > maxFields {
				return fmt.Errorf("its brace expansions make more than %d words", maxFields)
			}
		}
	}
	return err
}

// braceFields counts the words brace expansion makes of w, the way
// expand.Fields would expand it, saturating past maxFields.
func braceFields(w *syntax.Word) uint64 {
	word := *w // SplitBraces replaces the Parts slice
	if !syntax.SplitBraces(&word) {
		return 1
	}
	return partsFields(word.Parts)
}

func partsFields(parts []syntax.WordPart) uint64 {
	n := uint64(1)
	for _, part := range parts {
		br, ok := part.(*syntax.BraceExp)
		if !ok {
			continue
		}
		var alts uint64
		if br.Sequence {
			alts = sequenceLen(br)
		} else {
			for _, el := range br.Elems {
				alts = min(alts+partsFields(el.Parts), maxFields+1)
			}
		}
		if alts > 0 && n > (maxFields+1)/alts {
			return maxFields + 1
		}
		n = min(n*alts, maxFields+1)
	}
	return n
}

// sequenceLen counts {from..to[..step]} as expand's bracesSeqRec does.
func sequenceLen(br *syntax.BraceExp) uint64 {
	if len(br.Elems) < 2 {
		return 1
	}
	fromLit, toLit := br.Elems[0].Lit(), br.Elems[1].Lit()
	from, err1 := strconv.ParseInt(fromLit, 10, 64)
	to, err2 := strconv.ParseInt(toLit, 10, 64)
	if err1 != nil || err2 != nil {
		if fromLit == "" || toLit == "" {
			return 1
		}
		from, to = int64(fromLit[0]), int64(toLit[0])
	}
	step := uint64(1)
	if len(br.Elems) > 2 {
		if n, _ := strconv.ParseInt(br.Elems[2].Lit(), 10, 64); n != 0 {
			step = uint64(n)
			if n < 0 {
				step = uint64(-n)
			}
		}
	}
	// In uint64 the difference cannot overflow.
	span := uint64(to) - uint64(from)
	if from > to {
		span = uint64(from) - uint64(to)
	}
	return min(span/step+1, maxFields+1)
}

// appendVar applies "X+=v" or "X+=(a b)".
func appendVar(old, add *shellVar) *shellVar {
	if old.unknown != "" {
		return old
	}
	out := &shellVar{name: old.name, line: old.line, val: old.val, elemLines: slices.Clone(old.elemLines)}
	out.root = out
	switch {
	case old.val.Kind == expand.Indexed && add.val.Kind == expand.Indexed:
		out.val.List = append(slices.Clone(old.val.List), add.val.List...)
		out.elemLines = append(out.elemLines, add.elemLines...)
	case old.val.Kind == expand.Indexed:
		// Like bash: X+=v on an array appends to its first element.
		out.val.List = slices.Clone(old.val.List)
		if len(out.val.List) == 0 {
			out.val.List = []string{""}
			out.elemLines = []int{add.line}
		}
		out.val.List[0] += add.val.Str
	case add.val.Kind == expand.Indexed:
		out.val.Kind = expand.Indexed
		out.val.List = append([]string{old.val.Str}, add.val.List...)
		out.elemLines = append([]int{old.line}, add.elemLines...)
	default:
		out.val.Str += add.val.Str
	}
	return out
}

// list returns the variable as a list: an array's elements, or a string split
// at spaces and commas (the guide writes some lists as "a b c").
func (v *shellVar) list() (vals []string, lines []int) {
	if v.val.Kind == expand.Indexed {
		return v.val.List, v.elemLines
	}
	for _, f := range strings.FieldsFunc(v.val.Str, func(c rune) bool {
		return c == ',' || c == ' ' || c == '\t' || c == '\n'
	}) {
		vals = append(vals, f)
		lines = append(lines, v.line)
	}
	return vals, lines
}

// envLoader turns the guide's variables into a Cluster.
type envLoader struct {
	file string
	env  *shellEnv
	r    *report
}

// need returns a variable that must be set, or nil after reporting why it
// cannot be used. hint names the flag that would replace it, if any.
func (l *envLoader) need(name, hint string) *shellVar {
	v, ok := l.env.vars[name]
	if !ok {
		msg := "not set"
		if hint != "" {
			msg += " (or give " + hint + ")"
		}
		l.r.addAt(Pos{File: l.file}, name, "%s", msg)
		return nil
	}
	if v.unknown != "" {
		l.r.addAt(Pos{File: l.file, Line: v.line}, name, "value %s", v.unknown)
		return nil
	}
	return v
}

// scalar reads a single-valued variable; a one-element array is accepted,
// since "$X" of an array is its first element.
func (l *envLoader) scalar(name, hint, path string, into *string) {
	v := l.need(name, hint)
	if v == nil {
		l.r.bad[path] = true
		return
	}
	l.r.pos[path] = Pos{File: l.file, Line: v.line}
	switch {
	case v.val.Kind != expand.Indexed:
		*into = v.val.Str
	case len(v.val.List) == 1:
		*into = v.val.List[0]
	default:
		l.r.addAt(Pos{File: l.file, Line: v.line}, name, "want a single value, got an array of %d", len(v.val.List))
		l.r.bad[path] = true
	}
}

// loadEnvFile builds a Cluster from environment.sh. Variables that an
// override or the nodes file replaces are not needed, so problems with them
// are not reported.
func loadEnvFile(file string, src Sources, r *report) *Cluster {
	env := readEnvFile(file, r)
	if env == nil {
		return nil
	}
	l := &envLoader{file: file, env: env, r: r}
	r.pos[""] = Pos{File: file}
	c := &Cluster{APIVersion: APIVersion, Kind: Kind}

	if src.Overrides.APIServer == "" {
		l.scalar(envAPIServer, flagAPIServer, "apiServer", &c.APIServer)
	}
	if v := l.need(envDNS, ""); v != nil {
		vals, lines := v.list()
		c.ClusterDNS = vals
		r.pos["clusterDNS"] = Pos{File: file, Line: v.line}
		for i, line := range lines {
			r.pos[indexPath("clusterDNS", i)] = Pos{File: file, Line: line}
		}
	} else {
		r.bad["clusterDNS"] = true
	}
	if src.Overrides.ClusterDomain == "" {
		l.scalar(envDomain, flagClusterDomain, "clusterDomain", &c.ClusterDomain)
	}
	if v, ok := env.vars["PATH"]; ok && v.unknown == "" && v.val.Kind != expand.Indexed && src.Overrides.KubeletBinary == "" {
		// The guide installs its binaries in a directory it puts first on
		// PATH (export PATH=/opt/k8s/bin:$PATH); the kubelet is there.
		if dir := guideBinDir(v.val.Str); dir != "" {
			c.Kubelet.Binary = path.Join(dir, "kubelet")
			r.pos["kubelet.binary"] = Pos{File: file, Line: v.line}
		}
	}
	l.scalar(envServiceNet, "", "serviceCIDR", &c.ServiceCIDR)
	l.scalar(envPodNet, "", "podCIDR", &c.PodCIDR)
	if src.NodesFile == "" {
		c.Nodes = l.nodes()
	}
	return c
}

// guideBinDir is PATH's first directory that is not one of the system's own,
// or "".
func guideBinDir(p string) string {
	for _, dir := range strings.Split(p, ":") {
		switch dir = path.Clean(dir); {
		case dir == "." || !path.IsAbs(dir):
			continue
		case slices.Contains([]string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"}, dir):
			continue
		}
		return dir
	}
	return ""
}

// nodes pairs NODE_NAMES with NODE_IPS by position, as the guide's loops do.
func (l *envLoader) nodes() []Node {
	hint := flagNodesFile
	names, ips := l.need(envNodeNames, hint), l.need(envNodeIPs, hint)
	if names == nil || ips == nil {
		l.r.bad["nodes"] = true
		return nil
	}
	nameVals, nameLines := names.list()
	ipVals, ipLines := ips.list()
	if len(nameVals) != len(ipVals) {
		l.r.addAt(Pos{File: l.file, Line: names.line}, envNodeNames,
			"has %d names but %s (line %d) has %d IPs; they pair up by position",
			len(nameVals), envNodeIPs, ips.line, len(ipVals))
	}
	l.r.pos["nodes"] = Pos{File: l.file, Line: names.line}
	var nodes []Node
	for i := range min(len(nameVals), len(ipVals)) {
		p := indexPath("nodes", i)
		l.r.pos[p] = Pos{File: l.file, Line: nameLines[i]}
		l.r.pos[p+".name"] = Pos{File: l.file, Line: nameLines[i]}
		l.r.pos[p+".ip"] = Pos{File: l.file, Line: ipLines[i]}
		nodes = append(nodes, Node{Name: nameVals[i], IP: ipVals[i]})
	}
	if len(nodes) == 0 {
		l.r.bad["nodes"] = true
	}
	return nodes
}
