// Command floor is the benchmark's floor for live tokens: a bare client-go
// loop that creates N bootstrap-token Secrets with the same concurrency and
// client settings as `kubestrap generate`, and nothing else. It prints the
// wall time of the creates, then deletes what it made (not timed).
//
// With -http ADDR it is instead the floor of `serve`'s iPXE endpoints: a
// bare net/http server answering every request with the same fixed script,
// until killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/kubestrap/kubestrap/generator/token"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "admin kubeconfig")
	count := flag.Int("count", 1000, "Secrets to create")
	parallel := flag.Int("parallel", 16, "creates in flight (kubestrap's --parallel default)")
	httpAddr := flag.String("http", "", "serve a fixed iPXE script on this address instead")
	flag.Parse()
	if *httpAddr != "" {
		body := []byte("#!ipxe\nchain ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}&hostname=${hostname:uristring}\n")
		err := http.ListenAndServe(*httpAddr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write(body)
		}))
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	if err := run(*kubeconfig, *count, *parallel); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, count, parallel int) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// The same client-side limits kubestrap sets for this concurrency.
	cfg.QPS, cfg.Burst = float32(50*parallel), 100*parallel
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// The very Secrets kubestrap creates (token.Secret), so the floor differs
	// from kubestrap only in what kubestrap does around the creates.
	secrets := make([]*corev1.Secret, count)
	for i := range secrets {
		value, err := bootstraputil.GenerateBootstrapToken()
		if err != nil {
			return err
		}
		tok, err := token.New(value, fmt.Sprintf("floor-node-%05d", i), time.Now().Add(time.Hour), false)
		if err != nil {
			return err
		}
		secrets[i] = token.Secret(tok)
		secrets[i].Labels["bench"] = "floor"
	}
	ctx := context.Background()
	start := time.Now()
	if err := each(secrets, parallel, func(s *corev1.Secret) error {
		_, err := client.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Printf("floor: created %d Secrets with %d in flight in %.3f s (%.0f per second)\n", count, parallel, elapsed.Seconds(), float64(count)/elapsed.Seconds())
	return each(secrets, parallel, func(s *corev1.Secret) error {
		return client.CoreV1().Secrets(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
	})
}

// each calls f for every Secret with at most parallel calls in flight and
// returns the first error.
func each(secrets []*corev1.Secret, parallel int, f func(*corev1.Secret) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, parallel)
	)
	for _, s := range secrets {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(s); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}
