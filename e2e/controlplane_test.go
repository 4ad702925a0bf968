package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// controlPlane is etcd and kube-controller-manager on loopback and
// kube-apiserver on apiserverIP (what the nodes dial), each on a free port.
type controlPlane struct {
	pki *pki
	// url is what the nodes dial: https://<apiserverIP>:<port>.
	url string
	// adminKubeconfig is a system:masters kubeconfig for the apiserver.
	adminKubeconfig string

	etcd, apiserver, controllerManager *proc
	// apiserverArgs is kube-apiserver's command line, to start it again
	// after killing it (outage_test.go).
	apiserverArgs []string
}

// The cluster's networks (the cluster file says the same).
const (
	serviceCIDR   = "10.96.0.0/16"
	clusterDNS    = "10.96.0.10"
	podCIDR       = "10.244.0.0/16"
	clusterDomain = "cluster.local"
)

var firstServiceIP = net.IPv4(10, 96, 0, 1)

// startControlPlane starts etcd, kube-apiserver and kube-controller-manager,
// with controllerManagerArgs added to kube-controller-manager's flags (or
// replacing the flag of the same name).
func (h *harness) startControlPlane(controllerManagerArgs ...string) *controlPlane {
	h.t.Helper()
	cp := &controlPlane{pki: newPKI(h.t, h.path("pki"), net.ParseIP(apiserverIP), firstServiceIP)}
	p := cp.pki.path

	etcdClient, etcdPeer := freePort(h, "127.0.0.1"), freePort(h, "127.0.0.1")
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	cp.etcd = h.start("etcd", exec.Command(h.bins.etcd,
		"--name=e2e",
		"--data-dir="+h.path("etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=e2e="+peerURL,
		"--unsafe-no-fsync", // a throwaway cluster: speed over durability
		"--log-level=warn",
	))
	h.waitFor("etcd healthy", time.Minute, []*proc{cp.etcd}, func(ctx context.Context) (bool, string) {
		return httpOK(ctx, http.DefaultClient, etcdURL+"/health")
	})

	apiPort := freePort(h, apiserverIP)
	cp.url = "https://" + net.JoinHostPort(apiserverIP, strconv.Itoa(apiPort))
	apiserverCmd := exec.Command(h.bins.apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address="+apiserverIP,
		"--advertise-address="+apiserverIP,
		"--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+p("apiserver.crt"),
		"--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--service-account-key-file="+p("sa.pub"),
		"--service-account-signing-key-file="+p("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc."+clusterDomain,
		"--service-cluster-ip-range="+serviceCIDR,
		// What TLS bootstrapping needs: bootstrap tokens authenticate the
		// kubelet's first request; the Node authorizer and NodeRestriction
		// confine it once it has its certificate.
		"--enable-bootstrap-token-auth",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--profiling=false",
		"--v=1",
	)
	cp.apiserverArgs = slices.Clone(apiserverCmd.Args)
	cp.apiserver = h.start("kube-apiserver", apiserverCmd)
	cp.adminKubeconfig = h.path("admin.kubeconfig")
	writeKubeconfig(h, cp.adminKubeconfig, cp.url, cp.pki, "admin")
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.adminKubeconfig)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg.Timeout = 15 * time.Second
	h.client, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.waitFor("kube-apiserver ready (/readyz)", 2*time.Minute, []*proc{cp.etcd, cp.apiserver}, func(ctx context.Context) (bool, string) {
		body, err := h.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, body)
		}
		return true, ""
	})

	cmKubeconfig := h.path("controller-manager.kubeconfig")
	writeKubeconfig(h, cmKubeconfig, cp.url, cp.pki, "controller-manager")
	cmPort := freePort(h, "127.0.0.1")
	cmCmd := exec.Command(h.bins.controllerManager,
		"--kubeconfig="+cmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(cmPort),
		// Signs the kubelets' client CSRs with the cluster CA once the
		// csrapproving controller has approved them.
		"--cluster-signing-cert-file="+p("ca.crt"),
		"--cluster-signing-key-file="+p("ca.key"),
		// bootstrapsigner and tokencleaner are off by default; kubeadm
		// turns them on, and so do the guides kubestrap replaces.
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--root-ca-file="+p("ca.crt"),
		"--service-account-private-key-file="+p("sa.key"),
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--v=2",
	)
	for _, arg := range controllerManagerArgs {
		// A flag given again replaces the default (--controllers would
		// otherwise add to the list, where the first mention wins).
		name, _, _ := strings.Cut(arg, "=")
		cmCmd.Args = slices.DeleteFunc(cmCmd.Args, func(a string) bool { return strings.HasPrefix(a, name+"=") })
		cmCmd.Args = append(cmCmd.Args, arg)
	}
	cp.controllerManager = h.start("kube-controller-manager", cmCmd)
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	h.waitFor("kube-controller-manager healthy (/healthz)", 2*time.Minute, []*proc{cp.apiserver, cp.controllerManager}, func(ctx context.Context) (bool, string) {
		return httpOK(ctx, insecure, "https://127.0.0.1:"+strconv.Itoa(cmPort)+"/healthz")
	})
	return cp
}

// writeKubeconfig writes a kubeconfig for pki identity name (name.crt/.key).
func writeKubeconfig(h *harness, path, server string, p *pki, name string) {
	h.t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: p.path("ca.crt")}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificate: p.path(name + ".crt"), ClientKey: p.path(name + ".key")}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name}
	cfg.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		h.t.Fatal(err)
	}
}

func httpOK(ctx context.Context, c *http.Client, url string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, resp.Status
}

// freePort returns a TCP port free on ip right now.
func freePort(h *harness, ip string) int {
	h.t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
