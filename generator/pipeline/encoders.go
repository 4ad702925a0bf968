package pipeline

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/encode/iso"
	"github.com/kubestrap/kubestrap/generator/encode/rootfs"
	"github.com/kubestrap/kubestrap/generator/render"
)

// Ignition returns the encoder of config.ign (Butane's translation, with
// the ignition package's fast path for nodes of one shape), and with
// withButane also of its Butane source, config.bu.
//
// snippets, the user's Butane configs (ignition.NewSnippet), are merged into
// every node's config with Ignition's own merge, in order; config.bu stays
// kubestrap's own source.
func Ignition(o ignition.Options, withButane bool, snippets ...*ignition.Snippet) (Encoder, error) {
	e, err := ignition.NewEncoder(o)
	if err != nil {
		return nil, err
	}
	return &ignitionEncoder{enc: e, butane: withButane, opts: o, snippets: snippets}, nil
}

type ignitionEncoder struct {
	enc      *ignition.Encoder
	butane   bool
	opts     ignition.Options
	snippets []*ignition.Snippet
	owned    checkCache
}

// checkCache remembers whether the user's additions leave alone what a
// node's document writes, by the list of what it writes: nodes of one
// cluster mostly write the same paths, so the additions are checked once.
type checkCache struct{ m sync.Map } // string → error

// check returns check()'s error for key, calling it the first time only.
func (c *checkCache) check(key string, check func() error) error {
	v, ok := c.m.Load(key)
	if !ok {
		v = check()
		c.m.Store(key, v)
	}
	err, _ := v.(error)
	return err
}

func (e *ignitionEncoder) Encode(a render.Assets) ([]Document, []string, error) {
	ign, warnings, err := e.enc.Encode(a)
	if err != nil {
		return nil, nil, fmt.Errorf("ignition: %w", err)
	}
	if len(e.snippets) > 0 {
		if err := e.checkOwned(ign); err != nil {
			return nil, nil, err
		}
		merged, w, err := ignition.MergeInto(ign, e.snippets, e.opts)
		if err != nil {
			return nil, nil, fmt.Errorf("ignition: %w", err)
		}
		ign, warnings = merged, append(warnings, w...)
	}
	docs := []Document{{Name: IgnitionName, Data: ign}}
	if e.butane {
		bu, err := e.enc.Butane(a)
		if err != nil {
			return nil, nil, fmt.Errorf("butane: %w", err)
		}
		docs = append(docs, Document{Name: ButaneName, Data: bu})
	}
	return docs, warnings, nil
}

func (e *ignitionEncoder) checkOwned(ign []byte) error {
	paths, units, err := ignition.OwnedPaths(ign)
	if err != nil {
		return fmt.Errorf("ignition: %w", err)
	}
	key := strings.Join(paths, "\x00") + "\x01" + strings.Join(units, "\x00")
	return e.owned.check(key, func() error {
		var errs []string
		for _, s := range e.snippets {
			if err := s.Owned(paths, units); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if len(errs) > 0 {
			return snippetError{strings.Join(errs, "\n"), ignition.ErrSnippet}
		}
		return nil
	})
}

// snippetError keeps every snippet's problems and what they wrap.
type snippetError struct {
	msg  string
	kind error
}

func (e snippetError) Error() string        { return e.msg }
func (e snippetError) Is(target error) bool { return target == e.kind }

// CloudInitOptions shape the NoCloud seed.
type CloudInitOptions struct {
	// User, if not nil, is the user's cloud-config, merged into every
	// node's user-data.
	User *cloudinit.UserConfig
	// Gzip writes user-data gzip-compressed, which cloud-init decompresses
	// itself: platforms limit user-data's size (AWS: 16,384 bytes).
	Gzip bool
	// MaxUserData, if not zero, is the most bytes a node's user-data may
	// have, as written (compressed, with Gzip); more is ErrTooBig.
	MaxUserData int
	// ISO also writes the seed as cidata.iso, a NoCloud image, and NoFiles
	// leaves the loose user-data, meta-data and network-config out.
	ISO, NoFiles bool
}

// ISOName is the NoCloud seed image's file name.
const ISOName = "cidata.iso"

// ErrTooBig means a node's user-data is over CloudInitOptions.MaxUserData.
var ErrTooBig = errors.New("user-data over the size limit")

// tooBig says by how much; it is ErrTooBig.
type tooBig struct {
	size, limit int
	gzip        bool
}

func (e tooBig) Error() string {
	how := ""
	if e.gzip {
		how = " gzip-compressed"
	}
	return fmt.Sprintf("user-data is %d bytes%s, over the limit of %d", e.size, how, e.limit)
}

func (e tooBig) Is(target error) bool { return target == ErrTooBig }

// CloudInit returns the encoder of a NoCloud seed: user-data, meta-data and,
// for a static network, network-config.
func CloudInit(o CloudInitOptions) Encoder {
	return &cloudInitEncoder{opts: o}
}

type cloudInitEncoder struct {
	opts  CloudInitOptions
	owned checkCache
}

func (e *cloudInitEncoder) Encode(a render.Assets) ([]Document, []string, error) {
	ud, err := cloudinit.UserData(a)
	if err != nil {
		return nil, nil, fmt.Errorf("cloud-init: %w", err)
	}
	if user := e.opts.User; user != nil {
		paths, err := cloudinit.OwnedPaths(a)
		if err != nil {
			return nil, nil, fmt.Errorf("cloud-init: %w", err)
		}
		if err := e.owned.check(strings.Join(paths, "\x00"), func() error { return user.Owned(paths) }); err != nil {
			return nil, nil, err
		}
		// The meta-data's instance-id is the merged user-data's hash.
		if ud, err = cloudinit.MergeUserData(ud, user); err != nil {
			return nil, nil, fmt.Errorf("cloud-init: %w", err)
		}
	}
	md, err := cloudinit.MetaData(a, ud)
	if err != nil {
		return nil, nil, fmt.Errorf("cloud-init: %w", err)
	}
	if e.opts.Gzip {
		if ud, err = gzipped(ud); err != nil {
			return nil, nil, fmt.Errorf("cloud-init: %w", err)
		}
	}
	if max := e.opts.MaxUserData; max > 0 && len(ud) > max {
		return nil, nil, tooBig{size: len(ud), limit: max, gzip: e.opts.Gzip}
	}
	docs := []Document{{Name: UserDataName, Data: ud}, {Name: MetaDataName, Data: md}}
	nc, err := cloudinit.NetworkConfig(a)
	if err != nil {
		return nil, nil, fmt.Errorf("cloud-init: %w", err)
	}
	if nc != nil {
		docs = append(docs, Document{Name: NetworkConfigName, Data: nc})
	}
	if e.opts.ISO {
		files := make([]iso.File, len(docs))
		for i, d := range docs {
			files[i] = iso.File{Name: d.Name, Data: d.Data}
		}
		img, err := iso.NoCloud(files)
		if err != nil {
			return nil, nil, fmt.Errorf("cloud-init: %s: %w", ISOName, err)
		}
		if e.opts.NoFiles {
			docs = nil
		}
		docs = append(docs, Document{Name: ISOName, Data: img})
	}
	return docs, nil, nil
}

// gzipped is data gzip-compressed, the same bytes for the same data: no
// name or time in the header.
func gzipped(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// RootfsTar returns the encoder of rootfs.tar: the files a node's first boot
// lays down, for baking into an image.
func RootfsTar() Encoder { return rootfsEncoder{} }

type rootfsEncoder struct{}

func (rootfsEncoder) Encode(a render.Assets) ([]Document, []string, error) {
	data, err := rootfs.Tar(a)
	if err != nil {
		return nil, nil, fmt.Errorf("rootfs: %w", err)
	}
	return []Document{{Name: rootfs.Name, Data: data}}, nil, nil
}
