package ignition

import (
	"errors"
	"fmt"
	"strings"
)

// Variants Butane can target for kubestrap's nodes.
const (
	VariantFCOS    = "fcos"
	VariantFlatcar = "flatcar"
)

var (
	// ErrInvalidOptions means the user asked for a variant or version kubestrap
	// does not support.
	ErrInvalidOptions = errors.New("invalid Ignition options")
	// ErrInvalidGenerated means Butane or Ignition's validator rejected what
	// kubestrap produced (or the Assets it was given): a kubestrap bug, never a
	// user error.
	ErrInvalidGenerated = errors.New("generated Ignition config is invalid")
)

// Options selects the Butane variant and spec version, which in turn fix the
// Ignition spec version of the output.
type Options struct {
	// Variant is "fcos" (default when empty) or "flatcar".
	Variant string
	// Version is the Butane spec version, e.g. "1.6.0" or "1.6"; empty means
	// the variant's default (fcos 1.6.0, flatcar 1.1.0).
	Version string
}

// spec pairs a Butane spec version with the Ignition spec it translates to.
type spec struct {
	butane, ignition string
}

// variantSpecs lists the stable Butane specs kubestrap accepts for a variant,
// oldest first, and which one is the default. Experimental specs are left out
// on purpose: their output may change between Butane releases and the
// Ignition on the node may not accept it. Older specs are left out to keep the
// tested matrix small. It is a function rather than a package variable so
// nothing can modify the table.
func variantSpecs(variant string) (specs []spec, def string) {
	switch variant {
	case VariantFCOS:
		return []spec{
			{"1.4.0", "3.3.0"},
			{"1.5.0", "3.4.0"},
			{"1.6.0", "3.5.0"},
			{"1.7.0", "3.6.0"},
		}, "1.6.0"
	case VariantFlatcar:
		return []spec{
			{"1.0.0", "3.3.0"},
			{"1.1.0", "3.4.0"},
		}, "1.1.0"
	}
	return nil, ""
}

// resolved is Options with the defaults filled in and checked.
type resolved struct {
	variant, butane, ignition string
}

func (o Options) resolve() (resolved, error) {
	variant := o.Variant
	if variant == "" {
		variant = VariantFCOS
	}
	specs, def := variantSpecs(variant)
	if specs == nil {
		return resolved{}, fmt.Errorf("%w: unsupported Butane variant %q; accepted: %s", ErrInvalidOptions, o.Variant, accepted())
	}
	version := o.Version
	if version == "" {
		version = def
	}
	// "1.6" is how people say 1.6.0; Butane itself insists on three parts.
	// Anything else that is not in the table is rejected below.
	if strings.Count(version, ".") == 1 {
		version += ".0"
	}
	for _, s := range specs {
		if s.butane == version {
			return resolved{variant: variant, butane: s.butane, ignition: s.ignition}, nil
		}
	}
	return resolved{}, fmt.Errorf("%w: unsupported Butane spec version %q for variant %q; accepted: %s", ErrInvalidOptions, o.Version, variant, accepted())
}

// accepted describes every accepted combination for error messages, so a user
// who got one wrong learns all the right ones at once.
func accepted() string {
	var parts []string
	for _, v := range []string{VariantFCOS, VariantFlatcar} {
		specs, def := variantSpecs(v)
		var vs []string
		for _, s := range specs {
			d := ""
			if s.butane == def {
				d = ", default"
			}
			vs = append(vs, fmt.Sprintf("%s (Ignition %s%s)", s.butane, s.ignition, d))
		}
		parts = append(parts, v+" "+strings.Join(vs, ", "))
	}
	return strings.Join(parts, "; ") + `; versions may omit the patch number ("1.6"), experimental versions are not accepted`
}

// Check validates the variant and version combination, so a bad command line
// fails before any node is rendered. Errors wrap ErrInvalidOptions.
func (o Options) Check() error {
	_, err := o.resolve()
	return err
}

// IgnitionSpec returns the Ignition spec version the output will carry (e.g.
// "3.5.0"), or "" if the options are invalid.
func (o Options) IgnitionSpec() string {
	r, err := o.resolve()
	if err != nil {
		return ""
	}
	return r.ignition
}
