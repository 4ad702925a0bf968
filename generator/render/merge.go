package render

// merge returns base with over applied on top: maps merge key by key, any
// other value (lists included) replaces. Neither input is modified.
func merge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = deepCopy(v)
	}
	for k, v := range over {
		bm, bok := out[k].(map[string]any)
		om, ook := v.(map[string]any)
		if bok && ook {
			out[k] = merge(bm, om)
			continue
		}
		out[k] = deepCopy(v)
	}
	return out
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return merge(v, nil)
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
