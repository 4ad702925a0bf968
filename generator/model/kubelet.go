package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"

	"github.com/kubestrap/kubestrap/profiles"
)

// MergeKubeletConfig returns base with over applied on top: maps merge key by
// key, any other value (lists included) replaces. Neither input is modified.
func MergeKubeletConfig(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = deepCopy(v)
	}
	for k, v := range over {
		bm, bok := out[k].(map[string]any)
		om, ook := v.(map[string]any)
		if bok && ook {
			out[k] = MergeKubeletConfig(bm, om)
			continue
		}
		out[k] = deepCopy(v)
	}
	return out
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return MergeKubeletConfig(v, nil)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	default:
		return v
	}
}

// featureGates returns the featureGates map inside a kubelet config, or nil.
func featureGates(config map[string]any) map[string]any {
	g, _ := config["featureGates"].(map[string]any)
	return g
}

// KubeletBase returns the KubeletConfiguration fields (JSON names) that every
// node starts from: the profile's, without the feature gates that the target
// kubernetesVersion removed, with kubelet.config merged on top. A node's own
// kubelet.config goes on top of it (MergeKubeletConfig). The map is the
// caller's to modify.
//
// Load computes it once and has checked it; for a Cluster built by hand it is
// computed here, which fails for an unknown profile or version.
func (c *Cluster) KubeletBase() (map[string]any, error) {
	if c.kubeletBase != nil {
		return deepCopy(c.kubeletBase).(map[string]any), nil
	}
	removals, err := profiles.LoadRemovals()
	if err != nil {
		return nil, err
	}
	base, _, err := kubeletBase(c, removals)
	return base, err
}

// kubeletBase computes what KubeletBase returns, and warns about the profile's
// feature gates that it leaves out.
func kubeletBase(c *Cluster, removals profiles.Removals) (map[string]any, []Warning, error) {
	v := c.Version()
	if v == nil {
		return nil, nil, fmt.Errorf("kubernetesVersion %s is not a version", quote(c.KubernetesVersion))
	}
	p, err := profiles.Load(c.Kubelet.Profile)
	if err != nil {
		return nil, nil, err
	}
	// A profile may carry settings a newer kubelet dropped (legacy holds the
	// guide's feature gates): leave those out rather than break the kubelet.
	var warnings []Warning
	gates := featureGates(p.Config)
	for _, gate := range slices.Sorted(maps.Keys(gates)) {
		if rm, ok := removals.Find(profiles.FeatureGate, gate, v); ok {
			delete(gates, gate)
			warnings = append(warnings, Warning{Pos: profilePos(p.Name), Msg: fmt.Sprintf("feature gate %s left out: %s", gate, rm)})
		}
	}
	if gates != nil && len(gates) == 0 {
		delete(p.Config, "featureGates")
	}
	// With kubestrap's approver the serving CSRs have someone to approve
	// them, so the hardened kubelet asks for a CA-signed serving
	// certificate instead of signing its own; kubelet.config may still
	// say no.
	if c.Bound() && p.Name == DefaultProfile {
		p.Config = MergeKubeletConfig(p.Config, map[string]any{"serverTLSBootstrap": true})
	}
	// The OS's facts go between the profile and the user's settings.
	if o, ok := LookupOS(c.OS); ok && o.ResolvConf != "" {
		p.Config = MergeKubeletConfig(p.Config, map[string]any{"resolvConf": o.ResolvConf})
	}
	return MergeKubeletConfig(p.Config, c.Kubelet.Config), warnings, nil
}

func profilePos(name string) Pos { return Pos{File: "profile " + name} }

// kubeletChecker checks what the input gives the kubelet, cluster-wide and
// per node.
type kubeletChecker struct {
	r *report
	// version is the target kubelet's, nil when kubernetesVersion is invalid
	// (then nothing can be said about removals).
	version  *version.Version
	removals profiles.Removals
}

// maxDecodeRounds caps how often one config is decoded again after a
// problem: encoding/json stops at the first wrong value, so each round finds
// one and takes it out for the next.
const maxDecodeRounds = 16

// checkKubeletSettings checks kubelet.config and kubelet.extraArgs, the
// cluster's and each node's; when they are sound, it fixes the cluster's
// effective config and warns about what that config opens.
func checkKubeletSettings(c *Cluster, r *report, ver *version.Version) {
	removals, err := profiles.LoadRemovals()
	if err != nil {
		r.addAt(Pos{}, "", "kubestrap bug: %v", err)
		return
	}
	k := &kubeletChecker{r: r, version: ver, removals: removals}
	k.layer("kubelet", c.Kubelet.KubeletOverrides)
	for i, n := range c.Nodes {
		k.layer(indexPath("nodes", i)+".kubelet", n.Kubelet)
	}
	if r.count() > 0 {
		// Load fails: the warnings would not be shown, and the effective
		// config would be built from values already refused.
		return
	}
	base, warnings, err := kubeletBase(c, removals)
	if err != nil {
		r.addf("kubelet", "kubestrap bug: %v", err)
		return
	}
	kc, err := decodeKubeletConfig(base)
	if err != nil {
		// Each part decoded on its own, so the profile is at fault.
		r.addf("kubelet.profile", "kubestrap bug: profile %s and kubelet.config do not make a KubeletConfiguration: %v", c.Kubelet.Profile, err)
		return
	}
	c.kubeletBase = base
	c.Warnings = k.openings(kc, c.Kubelet.Profile, "kubelet.config", c.Kubelet.Config, true)
	c.Warnings = append(c.Warnings, warnings...)
	paths := profiles.OpeningPaths()
	for i, n := range c.Nodes {
		if !touchesAny(n.Kubelet.Config, paths) {
			continue
		}
		p := indexPath("nodes", i) + ".kubelet.config"
		kc, err := decodeKubeletConfig(MergeKubeletConfig(base, n.Kubelet.Config))
		if err != nil {
			r.addf(p, "does not make a KubeletConfiguration with the cluster's: %v", err)
			continue
		}
		c.Warnings = append(c.Warnings, k.openings(kc, c.Kubelet.Profile, p, n.Kubelet.Config, false)...)
	}
	if more := len(c.Warnings) - maxWarnings; more > 0 {
		c.Warnings = append(c.Warnings[:maxWarnings], Warning{Msg: fmt.Sprintf("… and %d more warnings", more)})
	}
}

// openings warns about what kc opens, each at whoever set it: the layer
// (config, at path) when it holds the setting, else, with profileToo, the
// profile.
func (k *kubeletChecker) openings(kc *kubeletv1beta1.KubeletConfiguration, profile, path string, config map[string]any, profileToo bool) []Warning {
	var out []Warning
	for _, o := range profiles.Openings(kc) {
		if segs, _, ok := resolveJSONPath(config, o.Path); ok {
			p := modelPath(path, segs)
			// A value of the user's (healthzBindAddress) could be long.
			out = append(out, Warning{Pos: k.r.at(p), Path: printable(p, maxText/4), Value: printable(o.Value, maxQuoted), Msg: o.Risk})
		} else if profileToo {
			out = append(out, Warning{Pos: profilePos(profile), Path: o.Path, Value: o.Value, Msg: o.Risk})
		}
	}
	return out
}

// touchesAny reports whether config sets any of the JSON paths or a parent of one.
func touchesAny(config map[string]any, paths []string) bool {
	for _, p := range paths {
		if _, ok := config[strings.SplitN(p, ".", 2)[0]]; ok {
			return true
		}
	}
	return false
}

// layer checks one set of kubelet overrides; at is "kubelet" or "nodes[i].kubelet".
func (k *kubeletChecker) layer(at string, o KubeletOverrides) {
	k.extraArgs(at+".extraArgs", o.ExtraArgs)
	if len(o.Config) == 0 {
		return
	}
	path := at + ".config"
	for _, f := range kubestrapFields() {
		if segs, _, ok := resolveJSONPath(o.Config, f.path); ok {
			p := modelPath(path, segs)
			k.r.addf(p, "set by kubestrap: %s", f.hint)
			k.r.bad[p] = true
		}
	}
	k.removedSettings(path, o.Config)
	k.decode(path, o.Config)
}

func (k *kubeletChecker) extraArgs(field string, args map[string]string) {
	for _, name := range slices.Sorted(maps.Keys(args)) {
		p := childPath(field, name)
		switch {
		case strings.HasPrefix(name, "-"):
			k.r.addf(p, "write flag names without the leading dashes: %s", strings.TrimLeft(name, "-"))
		case !isFlagName(name):
			k.r.addf(p, "%s is not a kubelet flag name (lowercase letters, digits and dashes)", quote(name))
		case refusedFlag(name) != "":
			k.r.addf(p, "--%s %s", name, refusedFlag(name))
		case k.version != nil:
			if rm, ok := k.removals.Find(profiles.Flag, name, k.version); ok {
				k.r.addf(p, "kubelet %s refuses --%s: %s", k.version, name, rm)
			}
		}
	}
}

// removedSettings refuses the config fields and feature gates that the
// target kubelet no longer has, with the table's reason; the strict decode
// would only call such a field unknown.
func (k *kubeletChecker) removedSettings(path string, config map[string]any) {
	if k.version == nil {
		return
	}
	for _, rm := range k.removals {
		if rm.Kind != profiles.Field {
			continue
		}
		if _, ok := k.removals.Find(profiles.Field, rm.Name, k.version); !ok {
			continue
		}
		if segs, _, ok := resolveJSONPath(config, rm.Name); ok {
			p := modelPath(path, segs)
			k.r.addf(p, "kubelet %s has no such setting: %s", k.version, rm)
			k.r.bad[p] = true
		}
	}
	for _, gate := range slices.Sorted(maps.Keys(featureGates(config))) {
		if rm, ok := k.removals.Find(profiles.FeatureGate, gate, k.version); ok {
			p := childPath(path+".featureGates", gate)
			k.r.addf(p, "kubelet %s refuses this gate: %s", k.version, rm)
			k.r.bad[p] = true
		}
	}
}

// decode checks config (at path) as a KubeletConfiguration on its own. Merged
// over the profile it would fail at the same places: merging replaces or adds
// values and never changes one, and the profiles decode (profiles tests), so
// every failure is one of this config's values, and is located here.
func (k *kubeletChecker) decode(path string, config map[string]any) {
	if k.r.isBad(path) {
		return
	}
	for _, cp := range configProblems(k.prune(path, config).(map[string]any)) {
		p := modelPath(path, cp.segs)
		k.r.addf(p, "%s", cp.msg)
		k.r.bad[p] = true
	}
}

// prune copies v without the values under path already refused (a control
// character, a removed setting), which would fail again in other words.
func (k *kubeletChecker) prune(path string, v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for key, e := range v {
			if p := childPath(path, key); !k.r.bad[p] {
				out[key] = k.prune(p, e)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			if p := indexPath(path, i); !k.r.bad[p] {
				out[i] = k.prune(p, e)
			}
		}
		return out
	default:
		return v
	}
}

// pathSeg is one step of a path inside a config: a key, or a list index.
type pathSeg struct {
	key   string
	index int
	isIdx bool
}

func modelPath(base string, segs []pathSeg) string {
	for _, s := range segs {
		if s.isIdx {
			base = indexPath(base, s.index)
		} else {
			base = childPath(base, s.key)
		}
	}
	return base
}

type configProblem struct {
	segs []pathSeg
	msg  string
}

// configProblems decodes config strictly as a KubeletConfiguration and says
// what is wrong with it, each problem at the value it is about.
func configProblems(config map[string]any) []configProblem {
	cfg := deepCopy(config).(map[string]any)
	var out []configProblem
	for range maxDecodeRounds {
		strict, err := strictDecode(cfg)
		if err == nil {
			// Strict errors come only from a config that decodes otherwise.
			for _, se := range strict {
				out = append(out, strictProblem(cfg, se))
			}
			return out
		}
		segs, leaf := locate(cfg, nil)
		if len(segs) == 0 {
			return append(out, configProblem{msg: "is not a KubeletConfiguration: " + err.Error()})
		}
		_, leafErr := strictDecode(nest(segs, leaf))
		out = append(out, configProblem{segs: segs, msg: valueProblem(segs, leaf, leafErr)})
		deleteAt(cfg, segs)
	}
	return out
}

// strictDecode decodes config as a KubeletConfiguration; err covers values
// that cannot be decoded (and configs without a JSON form), strict the
// unknown fields of one that can.
func strictDecode(config any) (strict []error, err error) {
	data, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	var kc kubeletv1beta1.KubeletConfiguration
	return sigsjson.UnmarshalStrict(data, &kc)
}

// decodeKubeletConfig decodes a config that must be valid.
func decodeKubeletConfig(config map[string]any) (*kubeletv1beta1.KubeletConfiguration, error) {
	data, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	var kc kubeletv1beta1.KubeletConfiguration
	strict, err := sigsjson.UnmarshalStrict(data, &kc)
	if err == nil {
		err = errors.Join(strict...)
	}
	return &kc, err
}

// locate finds the smallest part of v (at segs) that fails to decode on its
// own: encoding/json's errors name struct fields but neither map keys nor list
// indexes, and the errors of custom decoders (durations) name nothing. It
// stops at a value whose field takes a scalar (or decodes itself): a mapping
// given for a string is wrong as a whole.
func locate(v any, segs []pathSeg) ([]pathSeg, any) {
	if len(segs) > 0 && !isContainer(kubeletFieldType(segs)) {
		return segs, v
	}
	fails := func(s []pathSeg, e any) bool {
		_, err := strictDecode(nest(s, e))
		return err != nil
	}
	switch v := v.(type) {
	case map[string]any:
		for _, key := range slices.Sorted(maps.Keys(v)) {
			s := append(slices.Clip(segs), pathSeg{key: key})
			if fails(s, v[key]) {
				return locate(v[key], s)
			}
		}
	case []any:
		for i, e := range v {
			s := append(slices.Clip(segs), pathSeg{index: i, isIdx: true})
			if fails(s, e) {
				return locate(e, s)
			}
		}
	}
	return segs, v
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// isContainer reports whether a field of type t holds fields, keys or
// elements of its own; an unknown field (nil) might.
func isContainer(t reflect.Type) bool {
	if t == nil {
		return true
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return false
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Slice, reflect.Array:
		return true
	}
	return false
}

// nest puts v at segs in an otherwise empty config; a list index becomes a
// list of v alone.
func nest(segs []pathSeg, v any) any {
	for i := len(segs) - 1; i >= 0; i-- {
		if segs[i].isIdx {
			v = []any{v}
		} else {
			v = map[string]any{segs[i].key: v}
		}
	}
	return v
}

// deleteAt takes the value at segs out of config; a list element becomes null.
func deleteAt(config map[string]any, segs []pathSeg) {
	var cur any = config
	for i, s := range segs {
		last := i == len(segs)-1
		switch node := cur.(type) {
		case map[string]any:
			if last {
				delete(node, s.key)
				return
			}
			cur = node[s.key]
		case []any:
			if s.index >= len(node) {
				return
			}
			if last {
				node[s.index] = nil
				return
			}
			cur = node[s.index]
		default:
			return
		}
	}
}

var durationType = reflect.TypeFor[metav1.Duration]()

// valueProblem says why the value v at segs does not decode.
func valueProblem(segs []pathSeg, v any, err error) string {
	t := kubeletFieldType(segs)
	var (
		te *json.UnmarshalTypeError
		ue *json.UnsupportedValueError
	)
	switch {
	case err == nil:
		return "is not a KubeletConfiguration value"
	case errors.As(err, &ue):
		return fmt.Sprintf("%s has no JSON form", describeValue(v))
	case t == durationType:
		return fmt.Sprintf("want a duration like 5m0s, got %s", describeValue(v))
	case errors.As(err, &te):
		if t == nil {
			t = te.Type
		}
		return fmt.Sprintf("want %s, got %s", describeType(t), describeValue(v))
	default:
		return fmt.Sprintf("invalid value %s: %v", describeValue(v), err)
	}
}

func strictProblem(config map[string]any, err error) configProblem {
	kind := "unknown"
	if strings.HasPrefix(err.Error(), "duplicate") {
		kind = "duplicate"
	}
	var fe sigsjson.FieldError
	if !errors.As(err, &fe) {
		return configProblem{msg: err.Error()}
	}
	segs, _, ok := resolveJSONPath(config, fe.FieldPath())
	if !ok {
		return configProblem{segs: segs, msg: fmt.Sprintf("%s KubeletConfiguration field %s", kind, quote(fe.FieldPath()))}
	}
	return configProblem{segs: segs, msg: kind + " KubeletConfiguration field"}
}

// resolveJSONPath follows a decoder's field path ("authentication.foo",
// "reservedMemory[0].limits") through config. Map keys may hold dots, so the
// longest key that fits is taken. ok is false when only a prefix was found.
func resolveJSONPath(config map[string]any, path string) (segs []pathSeg, v any, ok bool) {
	v = config
	rest := path
	for rest != "" {
		switch node := v.(type) {
		case map[string]any:
			best, found := "", false
			for key := range node {
				fits := rest == key || strings.HasPrefix(rest, key+".") || strings.HasPrefix(rest, key+"[")
				if fits && (!found || len(key) > len(best)) {
					best, found = key, true
				}
			}
			if !found {
				return segs, v, false
			}
			segs = append(segs, pathSeg{key: best})
			v = node[best]
			rest = strings.TrimPrefix(rest[len(best):], ".")
		case []any:
			end := strings.Index(rest, "]")
			if !strings.HasPrefix(rest, "[") || end < 0 {
				return segs, v, false
			}
			i, err := strconv.Atoi(rest[1:end])
			if err != nil || i < 0 || i >= len(node) {
				return segs, v, false
			}
			segs = append(segs, pathSeg{index: i, isIdx: true})
			v = node[i]
			rest = strings.TrimPrefix(rest[end+1:], ".")
		default:
			return segs, v, false
		}
	}
	return segs, v, true
}

// kubeletFieldType is the Go type of the KubeletConfiguration field at segs
// (by JSON names), or nil.
func kubeletFieldType(segs []pathSeg) reflect.Type {
	t := reflect.TypeFor[kubeletv1beta1.KubeletConfiguration]()
	for _, s := range segs {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			if t = jsonField(t, s.key); t == nil {
				return nil
			}
		case reflect.Map, reflect.Slice, reflect.Array:
			t = t.Elem()
		default:
			return nil
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func jsonField(t reflect.Type, name string) reflect.Type {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && tag == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if found := jsonField(ft, name); found != nil {
					return found
				}
			}
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if tag == name {
			return f.Type
		}
	}
	return nil
}

func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("a number (%s)", t.Kind())
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return t.String()
}

func describeValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return quote(v)
	case bool:
		return strconv.FormatBool(v)
	case int, int64, uint64, float64:
		return fmt.Sprint(v)
	case map[string]any, map[any]any:
		return "a mapping"
	case []any:
		return "a list"
	default:
		return quote(fmt.Sprint(v))
	}
}
