package approve

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the approver's Prometheus metrics. None carries a token.
type Metrics struct {
	decisions     *prometheus.CounterVec
	tokensDeleted prometheus.Counter
	syncErrors    prometheus.Counter
	leader        prometheus.Gauge
	blanket       prometheus.Gauge
	// expiredUnused is read at each scrape, from the controller's caches.
	expiredUnused func() float64
}

// NewMetrics registers the metrics with reg (none when reg is nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubestrap_approve_decisions_total",
			Help: "CSRs decided, by kind (bootstrap, renewal, serving, other) and verdict (approve, deny, skip).",
		}, []string{"kind", "verdict"}),
		tokensDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubestrap_approve_tokens_deleted_total",
			Help: "Bootstrap tokens deleted because their node joined.",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubestrap_approve_sync_errors_total",
			Help: "Attempts to decide a CSR or end a token that failed and were retried or given up.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubestrap_approve_leader",
			Help: "1 while this replica leads and decides, else 0.",
		}),
		blanket: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubestrap_approve_blanket_approval",
			Help: "1 while bootstrap tokens may still have kube-controller-manager approve their CSRs for any node (bound mode not in force), 0 when not, -1 when unknown.",
		}),
	}
	expired := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kubestrap_approve_tokens_expired_unused",
		Help: "kubestrap's bootstrap tokens past their expiration that no CSR was made with.",
	}, func() float64 {
		if m.expiredUnused == nil {
			return 0
		}
		return m.expiredUnused()
	})
	if reg != nil {
		reg.MustRegister(m.decisions, m.tokensDeleted, m.syncErrors, m.leader, m.blanket, expired)
	}
	return m
}

// SetLeader says whether this replica leads.
func (m *Metrics) SetLeader(leading bool) {
	if leading {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// SetBlanket says whether the cluster still approves every bootstrap
// token's CSR (-1: the check failed).
func (m *Metrics) SetBlanket(v float64) { m.blanket.Set(v) }
