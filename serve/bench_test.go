package serve

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/kubestrap/kubestrap/generator/token"
)

// fixedMinter hands out one token, minting nothing.
type fixedMinter struct{ tok token.Token }

func (m fixedMinter) Mint(context.Context, string) (token.Minted, error) {
	return token.Minted{Token: m.tok}, nil
}

// BenchmarkIgnition is serve's own work for one /ignition answer (match,
// render, encode, log), the token's minting left out: what a storm costs
// serve's CPU beside the API server's.
func BenchmarkIgnition(b *testing.B) {
	t := &testing.T{}
	tok, err := token.New("abcdef.0123456789abcdef", "node-a", time.Now().Add(time.Hour), false)
	if err != nil {
		b.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.Rate, o.Burst, o.Tokens = rate.Inf, 1, fixedMinter{tok} })
	b.ReportAllocs()
	for b.Loop() {
		if w := e.get(t, "/ignition?mac=52:54:00:aa:00:01", nil); w.Code != 200 {
			b.Fatalf("status %d", w.Code)
		}
	}
}
