package pipeline

import (
	"fmt"

	"github.com/kubestrap/kubestrap/generator/encode/cloudinit"
	"github.com/kubestrap/kubestrap/generator/encode/ignition"
	"github.com/kubestrap/kubestrap/generator/render"
)

// Ignition returns the encoder of config.ign (Butane's translation, with
// the ignition package's fast path for nodes of one shape), and with
// withButane also of its Butane source, config.bu.
func Ignition(o ignition.Options, withButane bool) (Encoder, error) {
	e, err := ignition.NewEncoder(o)
	if err != nil {
		return nil, err
	}
	return ignitionEncoder{enc: e, butane: withButane}, nil
}

type ignitionEncoder struct {
	enc    *ignition.Encoder
	butane bool
}

func (e ignitionEncoder) Encode(a render.Assets) ([]Document, []string, error) {
	ign, warnings, err := e.enc.Encode(a)
	if err != nil {
		return nil, nil, fmt.Errorf("ignition: %w", err)
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

// CloudInit returns the encoder of a NoCloud seed: user-data and meta-data.
func CloudInit() Encoder { return cloudInitEncoder{} }

type cloudInitEncoder struct{}

func (cloudInitEncoder) Encode(a render.Assets) ([]Document, []string, error) {
	ud, err := cloudinit.UserData(a)
	if err != nil {
		return nil, nil, fmt.Errorf("cloud-init: %w", err)
	}
	md, err := cloudinit.MetaData(a, ud)
	if err != nil {
		return nil, nil, fmt.Errorf("cloud-init: %w", err)
	}
	docs := []Document{{Name: UserDataName, Data: ud}, {Name: MetaDataName, Data: md}}
	nc, err := cloudinit.NetworkConfig(a)
	if err != nil {
		return nil, nil, fmt.Errorf("cloud-init: %w", err)
	}
	if nc != nil {
		docs = append(docs, Document{Name: NetworkConfigName, Data: nc})
	}
	return docs, nil, nil
}
