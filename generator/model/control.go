package model

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"unicode/utf8"
)

// controlWhy ends every control-character problem.
const controlWhy = "control characters (U+0000–U+001F, U+007F) can end a line of the kubelet unit or of a file written from the value"

// checkControl refuses a C0 control character or DEL in every string of c.
// Each string reaches a unit, a kubeconfig, a flag or a file path, where a
// NUL or CR ends the line: extraArgs {v: "2\0ExecStartPre=..."} would add a
// command to the unit. It walks the Cluster by reflection, so a field added
// later is covered without anyone remembering to check it. Refused values are
// marked bad, so that later checks do not describe them again.
func checkControl(c *Cluster, r *report) {
	walkControl(reflect.ValueOf(c).Elem(), "", r)
}

func walkControl(v reflect.Value, path string, r *report) {
	if r.bad[path] && path != "" {
		// Refused already, and possibly too big to walk (see maxPathLen).
		return
	}
	switch v.Kind() {
	case reflect.String:
		switch c, ok := firstControl(v.String()); {
		case r.isBad(path):
		case ok:
			r.addf(path, "contains the control character %U; %s: %s", c, controlWhy, quote(v.String()))
			r.bad[path] = true
		case !utf8.ValidString(v.String()):
			// It would reach the documents as U+FFFD, or not at all.
			r.addf(path, "is not valid UTF-8: %s", quote(v.String()))
			r.bad[path] = true
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walkControl(v.Elem(), path, r)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			name, inline, ok := yamlName(t.Field(i))
			switch {
			case !ok:
				// Unexported and yaml:"-" fields are not input (CAPEM is
				// checked as PEM).
			case inline:
				walkControl(v.Field(i), path, r)
			default:
				walkControl(v.Field(i), childPath(path, name), r)
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return
		}
		for i := range v.Len() {
			walkControl(v.Index(i), indexPath(path, i), r)
		}
	case reflect.Map:
		type entry struct {
			key string
			val reflect.Value
		}
		var entries []entry
		for it := v.MapRange(); it.Next(); {
			entries = append(entries, entry{keyString(it.Key()), it.Value()})
		}
		// Map order must not leak into the order of problems.
		slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(a.key, b.key) })
		for _, e := range entries {
			p := childPath(path, e.key)
			if c, ok := firstControl(e.key); ok {
				// The key cannot name itself in a path a reader could use,
				// so the problem is the map's, at the key's line.
				if !r.isBad(p) {
					r.addAt(r.at(p), path, "a key contains the control character %U; %s: %s", c, controlWhy, quote(e.key))
					r.bad[p] = true
				}
				continue
			}
			walkControl(e.val, p, r)
		}
	}
}

func keyString(k reflect.Value) string {
	for k.Kind() == reflect.Interface && !k.IsNil() {
		k = k.Elem()
	}
	if k.Kind() == reflect.String {
		return k.String()
	}
	return fmt.Sprint(k.Interface())
}

func firstControl(s string) (rune, bool) {
	for _, c := range s {
		if isControl(c) {
			return c, true
		}
	}
	return 0, false
}
