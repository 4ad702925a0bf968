package serve

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	minted       prometheus.Counter
	deleted      prometheus.Counter
	mintFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubestrap_serve_requests_total", Help: "Requests answered, by endpoint and HTTP status.",
		}, []string{"endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kubestrap_serve_request_duration_seconds", Help: "Time to answer a request, by endpoint.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"endpoint"}),
		minted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubestrap_serve_tokens_minted_total", Help: "Bootstrap tokens minted for a document.",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubestrap_serve_tokens_deleted_total", Help: "Earlier unused tokens deleted when their node asked again.",
		}),
		mintFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubestrap_serve_token_failures_total", Help: "Requests that got no token (API server unreachable or refusing).",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.minted, m.deleted, m.mintFailures} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
