package fleet

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubestrap/kubestrap/approve"
	"github.com/kubestrap/kubestrap/generator/model"
)

// Reason is why no node needs a token any more.
type Reason string

const (
	// ReasonExpired: its expiration passed; the API server refuses it.
	ReasonExpired Reason = "expired"
	// ReasonJoined: a kubelet client CSR made with it was approved and
	// its certificate issued, and its node's Node exists. The kubelet
	// authenticates with that certificate from then on.
	ReasonJoined Reason = "joined"
	// ReasonNotInList: the node it was minted for is not in the list.
	ReasonNotInList Reason = "not-in-list"
)

// Candidate is a kubestrap token Secret that may be deleted.
type Candidate struct {
	Secret  string `json:"secret"`
	TokenID string `json:"tokenId"`
	// Node is the node the token was minted for (its annotation).
	Node string `json:"node"`
	// UID is the Secret's as read: the delete is conditioned on it.
	UID    types.UID `json:"uid"`
	Reason Reason    `json:"reason"`
}

// Prunable is the snapshot's kubestrap token Secrets that no node of the
// list needs any more, each with the first reason that holds, in the
// order of the list's nodes and then of the other nodes' names. Tokens of
// other tools are not in the snapshot, so never here.
func (s *Snapshot) Prunable(nodes []model.Node, now time.Time) []Candidate {
	order := make(map[string]int, len(nodes))
	for i, n := range nodes {
		order[n.Name] = i
	}
	// Token ids whose kubelet got its client certificate.
	issued := map[string]bool{}
	for i := range s.csrs {
		csr := &s.csrs[i]
		id, ok := strings.CutPrefix(csr.Spec.Username, approve.BootstrapUserPrefix)
		if ok && csr.Spec.SignerName == certv1.KubeAPIServerClientKubeletSignerName && csrStatus(csr).State == CSRIssued {
			issued[id] = true
		}
	}
	var out []Candidate
	for _, t := range s.tokens {
		_, inList := order[t.node]
		_, registered := s.nodes[t.node]
		var r Reason
		switch {
		case t.expired(now):
			r = ReasonExpired
		case issued[t.id] && registered:
			r = ReasonJoined
		case !inList:
			r = ReasonNotInList
		default:
			continue
		}
		out = append(out, Candidate{Secret: t.name, TokenID: t.id, Node: t.node, UID: t.uid, Reason: r})
	}
	rank := func(node string) int {
		if i, ok := order[node]; ok {
			return i
		}
		return len(nodes)
	}
	slices.SortFunc(out, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(rank(a.Node), rank(b.Node)), strings.Compare(a.Node, b.Node), strings.Compare(a.Secret, b.Secret))
	})
	return out
}

// Action is what Prune did with a candidate.
type Action string

const (
	ActionDeleted     Action = "deleted"
	ActionWouldDelete Action = "would be deleted" // dry run
	// ActionGone: the Secret was deleted by someone else meanwhile.
	ActionGone Action = "already gone"
	// ActionReplaced: a Secret of that name with another UID is there now;
	// it was not the one judged, so it stays.
	ActionReplaced Action = "replaced since read, kept"
)

// Pruned is a candidate and what became of it.
type Pruned struct {
	Candidate
	Action Action `json:"action"`
}

// Prune deletes the candidates, each only if its Secret still has the UID
// it was judged by; with dryRun it deletes nothing. It stops at the first
// delete that fails otherwise, and returns what it did up to there.
func Prune(ctx context.Context, client kubernetes.Interface, candidates []Candidate, dryRun bool) ([]Pruned, error) {
	api := client.CoreV1().Secrets(metav1.NamespaceSystem)
	done := make([]Pruned, 0, len(candidates))
	for _, c := range candidates {
		if dryRun {
			done = append(done, Pruned{c, ActionWouldDelete})
			continue
		}
		uid := c.UID
		err := api.Delete(ctx, c.Secret, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		switch {
		case err == nil:
			done = append(done, Pruned{c, ActionDeleted})
		case apierrors.IsNotFound(err):
			done = append(done, Pruned{c, ActionGone})
		case apierrors.IsConflict(err):
			done = append(done, Pruned{c, ActionReplaced})
		default:
			return done, fmt.Errorf("deleting Secret %s/%s: %w", metav1.NamespaceSystem, c.Secret, err)
		}
	}
	return done, nil
}
