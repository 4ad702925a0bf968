package model

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
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

// shellVar is one variable as the file leaves it.
type shellVar struct {
	val  expand.Variable
	line int
	// elemLines holds each array element's line, for arrays written over
	// several lines.
	elemLines []int
	// unknown says why the value cannot be known without running something
	// ("needs a command substitution ..."); "" when the value is known.
	unknown string
}

// shellEnv is the expand.Environ the file's own assignments build up. It never
// falls back to the process environment: the values must be the file's, not
// whatever the machine running kubestrap happens to have.
type shellEnv struct {
	vars map[string]*shellVar
	// touched lists the variables read by the current expansion, to carry
	// "unknown" from MASTER_IP=$(...) over to KUBE_APISERVER=https://$MASTER_IP.
	touched []string
}

func (e *shellEnv) Get(name string) expand.Variable {
	e.touched = append(e.touched, name)
	if v, ok := e.vars[name]; ok {
		return v.val
	}
	return expand.Variable{}
}

func (e *shellEnv) Each(fn func(string, expand.Variable) bool) {
	for _, name := range slices.Sorted(maps.Keys(e.vars)) {
		if !fn(name, e.vars[name].val) {
			return
		}
	}
}

// readEnvFile evaluates the top-level assignments of a shell file without
// running anything. It returns nil only when the file cannot be parsed.
func readEnvFile(file string, r *report) *shellEnv {
	f, err := os.Open(file)
	if err != nil {
		r.addAt(flagPos(flagEnvFile), "", "%v", err)
		return nil
	}
	defer f.Close()
	prog, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(f, file)
	if err != nil {
		r.probs = append(r.probs, shellSyntaxProblem(file, err))
		return nil
	}
	env := &shellEnv{vars: map[string]*shellVar{}}
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
	v := &shellVar{line: line, val: expand.Variable{Set: true, Kind: expand.String}}
	cfg := &expand.Config{
		Env: e,
		CmdSubst: func(io.Writer, *syntax.CmdSubst) error {
			return errCmdSubst
		},
		ProcSubst: func(*syntax.ProcSubst) (string, error) {
			return "", errProcSubst
		},
	}
	e.touched = e.touched[:0]
	var err error
	switch {
	case as.Index != nil:
		err = fmt.Errorf("element assignments (%s[i]=...) are not supported", name)
	case as.Array != nil:
		v.val.Kind = expand.Indexed
		for _, el := range as.Array.Elems {
			if el.Index != nil {
				err = fmt.Errorf("arrays with explicit indexes or keys are not supported")
				break
			}
			var fields []string
			if fields, err = expand.Fields(cfg, el.Value); err != nil {
				break
			}
			v.val.List = append(v.val.List, fields...)
			for range fields {
				v.elemLines = append(v.elemLines, int(el.Value.Pos().Line()))
			}
		}
	default:
		v.val.Str, err = expand.Literal(cfg, as.Value)
	}
	switch {
	case errors.Is(err, errCmdSubst):
		v.unknown = "needs a command substitution ($(...)); kubestrap never runs commands from this file"
	case errors.Is(err, errProcSubst):
		v.unknown = "needs a process substitution (<(...)); kubestrap never runs commands from this file"
	case err != nil:
		v.unknown = "cannot be evaluated: " + err.Error()
	default:
		for _, dep := range e.touched {
			if d, ok := e.vars[dep]; ok && d.unknown != "" {
				v.unknown = fmt.Sprintf("needs %s (line %d), whose value %s", dep, d.line, d.unknown)
				break
			}
		}
	}
	if old, ok := e.vars[name]; ok && as.Append && v.unknown == "" {
		v = appendVar(old, v)
	}
	e.vars[name] = v
}

// appendVar applies "X+=v" or "X+=(a b)".
func appendVar(old, add *shellVar) *shellVar {
	if old.unknown != "" {
		return old
	}
	out := &shellVar{line: old.line, val: old.val, elemLines: slices.Clone(old.elemLines)}
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
	l.scalar(envServiceNet, "", "serviceCIDR", &c.ServiceCIDR)
	l.scalar(envPodNet, "", "podCIDR", &c.PodCIDR)
	if src.NodesFile == "" {
		c.Nodes = l.nodes()
	}
	return c
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
