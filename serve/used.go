package serve

import (
	"fmt"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

const byUsername = "spec.username"

// UsedTokens tells which bootstrap tokens a kubelet used, from an informer
// on CertificateSigningRequests: a token is used once a CSR from
// system:bootstrap:<id> exists. An informer rather than a list per request:
// a storm of boots would otherwise list every CSR once per machine.
type UsedTokens struct {
	informer cache.SharedIndexInformer
}

// NewUsedTokens registers the CSR informer with f; start f and wait for
// HasSynced before serving.
func NewUsedTokens(f informers.SharedInformerFactory) (*UsedTokens, error) {
	inf := f.Certificates().V1().CertificateSigningRequests().Informer()
	err := inf.AddIndexers(cache.Indexers{byUsername: func(obj any) ([]string, error) {
		csr, ok := obj.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			return nil, fmt.Errorf("not a CSR: %T", obj)
		}
		if !strings.HasPrefix(csr.Spec.Username, "system:bootstrap:") {
			return nil, nil
		}
		return []string{csr.Spec.Username}, nil
	}})
	if err != nil {
		return nil, err
	}
	return &UsedTokens{informer: inf}, nil
}

// HasSynced reports whether the informer has listed every CSR once.
func (u *UsedTokens) HasSynced() bool { return u.informer.HasSynced() }

// Used reports whether a CSR was made with the token whose id this is.
func (u *UsedTokens) Used(id string) bool {
	items, err := u.informer.GetIndexer().ByIndex(byUsername, "system:bootstrap:"+id)
	return err == nil && len(items) > 0
}
