// Package serve answers machines that boot from the network: each asks for
// its own document (Ignition, a NoCloud seed, an iPXE script) and gets it
// with a bootstrap token minted at that moment. It keeps no state: the
// tokens are Secrets in the cluster, so replicas may run side by side.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/kubestrap/kubestrap/generator/model"
	"github.com/kubestrap/kubestrap/generator/pipeline"
	"github.com/kubestrap/kubestrap/generator/token"
)

// Minter mints a node's token for one boot (token.Boot).
type Minter interface {
	Mint(ctx context.Context, node string) (token.Minted, error)
}

// Options configure a Server.
type Options struct {
	// Cluster is a validated cluster (model.Load's), nodes included.
	Cluster *model.Cluster
	// Ignition and CloudInit encode the documents; nil leaves that
	// endpoint answering 404 (an OS that runs no Ignition, or no
	// cloud-init).
	Ignition, CloudInit pipeline.Encoder
	Tokens              Minter
	// Profile, if set, is what /ipxe boots.
	Profile *BootProfile
	// URL is where machines reach this server ("http://10.0.0.2:8080"),
	// for the URLs /ipxe hands on; "" takes the request's own.
	URL string
	// MatchSourceIP answers a node that has an ip only from that address.
	MatchSourceIP bool
	// Rate and Burst limit each node's token requests; zero Rate means
	// DefaultRate and DefaultBurst.
	Rate  rate.Limit
	Burst int
	// MintTimeout bounds one token's minting, the wait for a turn
	// included; zero means DefaultMintTimeout.
	MintTimeout time.Duration
	// MaxInFlight bounds the mints under way at once, so a storm of boots
	// queues here rather than at the API server; zero means
	// DefaultMaxInFlight.
	MaxInFlight int
	// RetryAfter is what a 503 or 429 tells the machine to wait; zero
	// means DefaultRetryAfter.
	RetryAfter time.Duration
	// Ready says whether the API server answers (/readyz).
	Ready func(context.Context) error
	Log   *slog.Logger
	// Registry receives the server's metrics and is what /metrics shows.
	Registry *prometheus.Registry
}

// Defaults.
const (
	// A machine asks once per boot, a few times if it retries: one token a
	// minute after a burst of five stops a loop without slowing a boot.
	DefaultRate        = rate.Limit(1.0 / 60)
	DefaultBurst       = 5
	DefaultMintTimeout = 15 * time.Second
	DefaultRetryAfter  = 10 * time.Second
	DefaultMaxInFlight = 64
)

// placeholderToken renders what carries no token (meta-data,
// network-config): it never leaves the server, which checks so.
const placeholderToken = "000000.0000000000000000"

// Server is the HTTP handler.
type Server struct {
	o        Options
	ign, ci  *pipeline.Pipeline
	ix       *index
	nodes    []model.Node
	limiters []*rate.Limiter
	// locks serialise one node's mints in this replica: one slot each.
	locks []chan struct{}
	// turns holds one entry per mint under way.
	turns   chan struct{}
	m       *metrics
	mux     *http.ServeMux
	noToken token.Token
}

// New checks o and builds the server.
func New(o Options) (*Server, error) {
	if o.Cluster == nil || o.Tokens == nil || o.Log == nil || o.Registry == nil {
		return nil, errors.New("serve: Cluster, Tokens, Log and Registry are required")
	}
	if o.Ignition == nil && o.CloudInit == nil {
		return nil, errors.New("serve: no document to serve")
	}
	if o.Rate == 0 {
		o.Rate, o.Burst = DefaultRate, DefaultBurst
	}
	if o.MintTimeout == 0 {
		o.MintTimeout = DefaultMintTimeout
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = DefaultRetryAfter
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.URL != "" {
		u, err := url.Parse(o.URL)
		// url.Parse refuses control characters but not a space, which
		// would split the kernel line of /ipxe's script.
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
			strings.ContainsRune(o.URL, ' ') {
			return nil, fmt.Errorf("serve: URL %q is not an http or https base URL", o.URL)
		}
		o.URL = strings.TrimSuffix(o.URL, "/")
	}
	s := &Server{o: o, nodes: o.Cluster.Nodes, ix: newIndex(o.Cluster.Nodes), mux: http.NewServeMux()}
	var err error
	if o.Ignition != nil {
		if s.ign, err = pipeline.New(o.Cluster, o.Ignition); err != nil {
			return nil, err
		}
	}
	if o.CloudInit != nil {
		if s.ci, err = pipeline.New(o.Cluster, o.CloudInit); err != nil {
			return nil, err
		}
	}
	if s.noToken, err = token.New(placeholderToken, "", time.Time{}, false); err != nil {
		return nil, err
	}
	s.limiters = make([]*rate.Limiter, len(s.nodes))
	for i := range s.limiters {
		s.limiters[i] = rate.NewLimiter(o.Rate, o.Burst)
	}
	s.locks = make([]chan struct{}, len(s.nodes))
	for i := range s.locks {
		s.locks[i] = make(chan struct{}, 1)
	}
	s.turns = make(chan struct{}, o.MaxInFlight)
	if s.m, err = newMetrics(o.Registry); err != nil {
		return nil, err
	}
	s.route("GET /ignition", epIgnition, s.ignition)
	s.route("GET /nocloud/{id}/{file}", epNoCloud, s.nocloud)
	s.route("GET /boot.ipxe", epBootIPXE, s.bootIPXE)
	s.route("GET /ipxe", epIPXE, s.ipxe)
	s.route("GET /healthz", epHealthz, func(w http.ResponseWriter, r *http.Request) *reply {
		return &reply{status: http.StatusOK, body: []byte("ok\n")}
	})
	s.route("GET /readyz", epReadyz, s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.m.requests.WithLabelValues(epOther, "404").Inc()
		http.NotFound(w, r)
	})
	return s, nil
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Endpoint labels, in metrics and logs.
const (
	epIgnition = "ignition"
	epNoCloud  = "nocloud"
	epBootIPXE = "boot.ipxe"
	epIPXE     = "ipxe"
	epHealthz  = "healthz"
	epReadyz   = "readyz"
	epOther    = "other"
)

// reply is a handler's answer and what its log line says.
type reply struct {
	status      int
	body        []byte
	contentType string
	secret      bool // the body holds a token: never cached
	node        string
	tokenID     string
	deleted     []string
	why         string        // for an error status: the log's reason
	retryAfter  time.Duration // for a 429: when to ask again, if not RetryAfter
	err         error
}

func (s *Server) route(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) *reply) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rep := h(w, r)
		hdr := w.Header()
		if rep.contentType == "" {
			rep.contentType = "text/plain; charset=utf-8"
		}
		hdr.Set("Content-Type", rep.contentType)
		hdr.Set("X-Content-Type-Options", "nosniff")
		if rep.secret || rep.status != http.StatusOK {
			hdr.Set("Cache-Control", "no-store")
		}
		if rep.status == http.StatusMethodNotAllowed {
			hdr.Set("Allow", http.MethodGet)
		}
		if rep.status == http.StatusServiceUnavailable || rep.status == http.StatusTooManyRequests {
			wait := s.o.RetryAfter
			if rep.retryAfter > 0 {
				wait = rep.retryAfter
			}
			hdr.Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		}
		body := rep.body
		if rep.status != http.StatusOK && body == nil {
			body = []byte(http.StatusText(rep.status) + "\n")
		}
		hdr.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rep.status)
		w.Write(body)
		took := time.Since(start)
		code := strconv.Itoa(rep.status)
		s.m.requests.WithLabelValues(endpoint, code).Inc()
		s.m.latency.WithLabelValues(endpoint).Observe(took.Seconds())
		if endpoint == epHealthz || endpoint == epReadyz && rep.status == http.StatusOK {
			return
		}
		attrs := []slog.Attr{
			slog.String("endpoint", endpoint), slog.Int("status", rep.status),
			slog.String("remote", r.RemoteAddr), slog.Duration("took", took),
		}
		if rep.node != "" {
			attrs = append(attrs, slog.String("node", rep.node))
		}
		if rep.tokenID != "" {
			attrs = append(attrs, slog.String("token_id", rep.tokenID))
		}
		if len(rep.deleted) > 0 {
			attrs = append(attrs, slog.Any("deleted_token_ids", rep.deleted))
		}
		if rep.why != "" {
			attrs = append(attrs, slog.String("reason", rep.why))
		}
		level := slog.LevelInfo
		if rep.err != nil {
			attrs = append(attrs, slog.String("error", rep.err.Error()))
			level = slog.LevelWarn
		}
		s.o.Log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

func notFound(why string) *reply { return &reply{status: http.StatusNotFound, why: why} }

// find matches the request's machine to a node, and checks its source
// address when asked to.
func (s *Server) find(r *http.Request, i int, why string) (int, *reply) {
	if i < 0 {
		return -1, notFound(why)
	}
	n := s.nodes[i]
	if s.o.MatchSourceIP && n.IP != "" {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		src, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || src.Unmap() != n.Addr() {
			// As unknown: the machine learns nothing of which nodes exist.
			rep := notFound(fmt.Sprintf("node %s answers only %s, not %s", n.Name, n.IP, host))
			rep.node = n.Name
			return -1, rep
		}
	}
	return i, nil
}

func (s *Server) ignition(w http.ResponseWriter, r *http.Request) *reply {
	if s.ign == nil {
		return notFound("the cluster's os boots with cloud-init, not Ignition")
	}
	i, _, why := s.ix.match(r.URL.Query())
	i, rep := s.find(r, i, why)
	if rep != nil {
		return rep
	}
	return s.document(r, s.ign, i, pipeline.IgnitionName, "application/vnd.coreos.ignition+json")
}

func (s *Server) nocloud(w http.ResponseWriter, r *http.Request) *reply {
	if s.ci == nil {
		return notFound("the cluster's os boots with Ignition, not cloud-init")
	}
	file := r.PathValue("file")
	switch file {
	case pipeline.UserDataName, pipeline.MetaDataName, pipeline.NetworkConfigName, "vendor-data":
	default:
		return notFound("no such NoCloud file")
	}
	i, _, why := s.ix.matchSegment(r.PathValue("id"))
	i, rep := s.find(r, i, why)
	if rep != nil {
		return rep
	}
	n := s.nodes[i]
	switch file {
	case pipeline.UserDataName:
		return s.document(r, s.ci, i, file, "text/plain; charset=utf-8")
	case "vendor-data":
		// cloud-init asks; kubestrap has none.
		return &reply{status: http.StatusOK, body: []byte{}, node: n.Name}
	}
	docs, _, err := s.ci.Node(n, s.noToken)
	if err != nil {
		return &reply{status: http.StatusInternalServerError, node: n.Name, err: err}
	}
	for _, d := range docs {
		if d.Name != file {
			continue
		}
		if strings.Contains(string(d.Data), placeholderToken) {
			// A document that carries the token must be minted for.
			return &reply{status: http.StatusInternalServerError, node: n.Name, err: fmt.Errorf("%s carries a token", file)}
		}
		return &reply{status: http.StatusOK, body: d.Data, node: n.Name}
	}
	rep = notFound("the node has no " + file)
	rep.node = n.Name
	return rep
}

// document mints node i's token and renders its document name.
func (s *Server) document(r *http.Request, p *pipeline.Pipeline, i int, name, contentType string) *reply {
	n := s.nodes[i]
	if r.Method != http.MethodGet {
		// A HEAD would mint a token for a document nobody receives.
		return &reply{status: http.StatusMethodNotAllowed, node: n.Name, why: "a document that holds a token is for GET only"}
	}
	if res := s.limiters[i].Reserve(); res.Delay() > 0 {
		// Retry-After says when the node's next token is due, not a
		// fixed wait: an obedient machine asks once more, not five times.
		wait := res.Delay()
		res.Cancel()
		return &reply{status: http.StatusTooManyRequests, node: n.Name, retryAfter: wait, why: "the node's token requests are over the rate limit"}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.MintTimeout)
	defer cancel()
	// One mint per node at a time here: two at once would each delete
	// the other's token only if the API server's order said so. The wait
	// for it is bounded like the rest of the mint.
	select {
	case s.locks[i] <- struct{}{}:
		defer func() { <-s.locks[i] }()
	case <-ctx.Done():
		s.m.mintFailures.Inc()
		return &reply{status: http.StatusServiceUnavailable, node: n.Name, why: "the node's earlier request is still minting", err: ctx.Err()}
	}
	select {
	case s.turns <- struct{}{}:
	case <-ctx.Done():
		s.m.mintFailures.Inc()
		return &reply{status: http.StatusServiceUnavailable, node: n.Name, why: "no turn to mint within the timeout", err: ctx.Err()}
	}
	minted, err := s.o.Tokens.Mint(ctx, n.Name)
	<-s.turns
	if err != nil {
		s.m.mintFailures.Inc()
		status := http.StatusInternalServerError
		if token.Unavailable(err) || errors.Is(err, token.ErrContended) || errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusServiceUnavailable
		}
		return &reply{status: status, node: n.Name, why: "no token", err: err}
	}
	s.m.minted.Inc()
	s.m.deleted.Add(float64(len(minted.Deleted)))
	rep := &reply{node: n.Name, tokenID: minted.Token.ID, deleted: minted.Deleted}
	docs, _, err := p.Node(n, minted.Token)
	if err != nil {
		rep.status, rep.err = http.StatusInternalServerError, err
		return rep
	}
	for _, d := range docs {
		if d.Name == name {
			rep.status, rep.body, rep.contentType, rep.secret = http.StatusOK, d.Data, contentType, true
			return rep
		}
	}
	rep.status, rep.err = http.StatusInternalServerError, fmt.Errorf("the encoder wrote no %s", name)
	return rep
}

func (s *Server) bootIPXE(w http.ResponseWriter, r *http.Request) *reply {
	if s.o.Profile == nil {
		return notFound("no boot profile (--boot-profile)")
	}
	return &reply{status: http.StatusOK, body: []byte(bootScript)}
}

func (s *Server) ipxe(w http.ResponseWriter, r *http.Request) *reply {
	if s.o.Profile == nil {
		return notFound("no boot profile (--boot-profile)")
	}
	i, which, why := s.ix.match(r.URL.Query())
	i, rep := s.find(r, i, why)
	if rep != nil {
		return rep
	}
	n := s.nodes[i]
	base := s.base(r)
	// The node's own key, normalized: nothing the machine sent reaches
	// the script.
	q := which[0] + "=" + which[1]
	if which[0] != keyMAC && which[0] != keyUUID {
		// Normalized MACs and UUIDs are plain; a serial may hold & or %.
		q = which[0] + "=" + url.QueryEscape(which[1])
	}
	id := n.MAC
	if id == "" {
		id = which[1]
	}
	vars := map[string]string{
		"{ignition_url}": base + "/ignition?" + q,
		"{nocloud_url}":  base + "/nocloud/" + url.PathEscape(id) + "/",
		"{node}":         n.Name,
	}
	return &reply{status: http.StatusOK, body: s.o.Profile.script(vars), node: n.Name}
}

// base is the URL machines reach this server at.
func (s *Server) base(r *http.Request) string {
	if s.o.URL != "" {
		return s.o.URL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	// The Host header is the machine's, and lands in a script: only a
	// plain host[:port] is used.
	host := r.Host
	if !plainHost(host) {
		host = "localhost"
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			host = a.String()
		}
	}
	return scheme + "://" + host
}

func plainHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return false
		}
	}
	return true
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) *reply {
	if s.o.Ready == nil {
		return &reply{status: http.StatusOK, body: []byte("ok\n")}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.o.Ready(ctx); err != nil {
		return &reply{status: http.StatusServiceUnavailable, why: "the API server does not answer", err: err}
	}
	return &reply{status: http.StatusOK, body: []byte("ok\n")}
}
