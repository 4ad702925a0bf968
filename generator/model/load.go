package model

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kubestrap/kubestrap/profiles"
)

// The CLI's flag names, used to locate values and problems that came from the
// command line ("flag --ca-file: caFile: ...") and in hints. cmd/kubestrap must
// use the same names.
const (
	flagClusterFile   = "-f"
	flagEnvFile       = "--env"
	flagNodesFile     = "--nodes"
	flagAPIServer     = "--api-server"
	flagCAFile        = "--ca-file"
	flagVersion       = "--kubernetes-version"
	flagProfile       = "--profile"
	flagTokenTTL      = "--token-ttl"
	flagKubeletBinary = "--kubelet-binary"
	flagClusterDomain = "--cluster-domain"
)

// flagPos locates a value or problem at a command-line flag.
func flagPos(flag string) Pos { return Pos{File: "flag " + flag} }

// Sources names the inputs of one run. Exactly one of ClusterFile and EnvFile
// must be given.
type Sources struct {
	// ClusterFile is cluster.yaml (-f).
	ClusterFile string
	// EnvFile is the guide's environment.sh (--env).
	EnvFile string
	// NodesFile (--nodes) is a YAML list of nodes or CSV name,ip[,mac], told
	// apart by extension (.csv, .yaml/.yml/.json) or else by content. Its nodes
	// replace those of ClusterFile or EnvFile.
	NodesFile string
	Overrides Overrides
	// CA, if set, supplies the CA when neither the file nor --ca-file names
	// one (from the admin kubeconfig, or a pinned cluster-info). Its PEM is
	// checked like a CA file's.
	CA CAResolver
}

// CAResolver returns a CA certificate in PEM and where it came from, for
// messages ("kubeconfig admin.conf").
type CAResolver func(ctx context.Context) (pem []byte, source string, err error)

// Overrides are command-line values; an empty field means "not given". Each
// replaces the file's value and is located at the flag ("flag --api-server").
type Overrides struct {
	APIServer         string // --api-server
	CAFile            string // --ca-file, relative to the working directory
	KubernetesVersion string // --kubernetes-version
	Profile           string // --profile
	TokenTTL          string // --token-ttl
	KubeletBinary     string // --kubelet-binary
	ClusterDomain     string // --cluster-domain
}

// Load reads the sources, applies overrides, fills defaults, reads the CA file
// into Cluster.CAPEM, and validates everything at time now (the CA's validity
// period is checked against it).
//
// Bad input yields Problems, which match ErrInvalid; Load reports every problem
// it can find rather than stopping at the first, kubelet settings included
// (each KubeletConfiguration is decoded here, and checked against the target
// version's removed flags, fields and feature gates). Files that cannot be read
// are Problems too, located at the flag that named them. The only other error
// is ctx's.
//
// Settings that Load accepts but that open the kubelet (the legacy profile's,
// or a user's readOnlyPort) are in Cluster.Warnings.
//
// On success every field is normalised (defaults filled, version "v"-prefixed,
// domain without trailing dot, IPs and MACs in canonical form, CAFile resolved)
// so later stages read fields without re-checking them.
func Load(ctx context.Context, src Sources, now time.Time) (*Cluster, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("loading cluster: %w", err)
	}
	r := newReport()
	var c *Cluster
	switch {
	case src.ClusterFile != "" && src.EnvFile != "":
		r.addAt(flagPos(flagEnvFile), "", "give either -f cluster.yaml or --env environment.sh, not both")
		return nil, r.problems()
	case src.ClusterFile != "":
		c = loadClusterFile(src.ClusterFile, r)
	case src.EnvFile != "":
		c = loadEnvFile(src.EnvFile, src, r)
	default:
		r.addAt(Pos{}, "", "no cluster given: give -f cluster.yaml or --env environment.sh")
		return nil, r.problems()
	}
	if c == nil {
		return nil, r.problems()
	}
	if src.NodesFile != "" {
		nodes, ok := loadNodesFile(src.NodesFile, r)
		c.Nodes = nodes
		if !ok {
			r.bad["nodes"] = true
		}
	}
	applyOverrides(c, src.Overrides, r)
	switch {
	case c.CAFile != "":
	case src.CA != nil:
		pem, source, err := src.CA(ctx)
		if err != nil {
			r.addAt(Pos{File: source}, "caFile", "%v", err)
			r.bad["caFile"] = true
		}
		c.CAPEM, c.caSource = pem, source
	case src.EnvFile != "":
		r.addf("caFile", "required: give %s", flagCAFile)
		r.bad["caFile"] = true
	}
	fillDefaults(c)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("loading cluster: %w", err)
	}
	// Before any check reads a value: whatever it would say about a value
	// with a control character in it, the character is the problem.
	checkControl(c, r)
	validate(c, r, now, profiles.Names())
	if r.count() > 0 {
		return nil, r.problems()
	}
	return c, nil
}

func applyOverrides(c *Cluster, o Overrides, r *report) {
	for _, ov := range []struct {
		val, flag, path string
		field           *string
	}{
		{o.APIServer, flagAPIServer, "apiServer", &c.APIServer},
		{o.CAFile, flagCAFile, "caFile", &c.CAFile},
		{o.KubernetesVersion, flagVersion, "kubernetesVersion", &c.KubernetesVersion},
		{o.Profile, flagProfile, "kubelet.profile", &c.Kubelet.Profile},
		{o.TokenTTL, flagTokenTTL, "token.ttl", &c.Token.TTL},
		{o.KubeletBinary, flagKubeletBinary, "kubelet.binary", &c.Kubelet.Binary},
		{o.ClusterDomain, flagClusterDomain, "clusterDomain", &c.ClusterDomain},
	} {
		if ov.val == "" {
			continue
		}
		*ov.field = ov.val
		r.forget(ov.path)
		r.pos[ov.path] = flagPos(ov.flag)
	}
}

// fillDefaults fills what neither a file nor a flag gave. Defaults have no
// position of their own; a problem with one would be kubestrap's bug.
func fillDefaults(c *Cluster) {
	if c.Token.TTL == "" {
		c.Token.TTL = DefaultTokenTTL.String()
	}
	if c.Kubelet.Profile == "" {
		c.Kubelet.Profile = DefaultProfile
	}
	c.kubeletBinaryGiven = c.Kubelet.Binary != ""
	if c.Kubelet.Binary == "" {
		c.Kubelet.Binary = DefaultKubeletBinary
	}
	// The guide writes "cluster.local."; the kubelet wants it without the dot.
	c.ClusterDomain = strings.TrimSuffix(c.ClusterDomain, ".")
	if c.ClusterDomain == "" {
		c.ClusterDomain = DefaultClusterDomain
	}
	if c.KubernetesVersion == "" {
		c.KubernetesVersion = NewestVersion
	}
}

// maxFileSize caps every file Load reads. A 20,000-node list is about 2 MB;
// much more is a wrong path or a device, and yaml.v3 builds some hundred
// bytes of nodes per byte of a dense document, so a huge one would only
// exhaust memory.
const maxFileSize = 8 << 20

// readInput reads a whole input file of at most limit bytes, without a
// leading UTF-8 byte order mark: spreadsheets export CSV with one, and it
// would otherwise be part of the first node's name.
func readInput(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d MiB; kubestrap reads no input that big", file, limit>>20)
	}
	return bytes.TrimPrefix(data, []byte("\ufeff")), nil
}
