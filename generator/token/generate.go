package token

import (
	"crypto/rand"
	"fmt"
	"io"

	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// tokenChars are the characters of a bootstrap token, as cluster-bootstrap
// draws them.
const tokenChars = "0123456789abcdefghijklmnopqrstuvwxyz"

// Generate returns a new random bootstrap token, "id.secret", with each
// character drawn uniformly from [a-z0-9] like cluster-bootstrap's
// GenerateBootstrapToken. That one draws every character with its own
// crypto/rand.Int over a big.Int, which made minting the largest cost of
// an offline run after the documents themselves (9 µs a token); this reads
// the random bytes at once and keeps those below 252, the largest multiple
// of 36 a byte holds, so that every character stays equally likely.
func Generate() (string, error) { return generate(rand.Reader) }

func generate(r io.Reader) (string, error) {
	const n = bootstrapapi.BootstrapTokenIDBytes + bootstrapapi.BootstrapTokenSecretBytes
	var (
		chars [n]byte
		buf   [32]byte // 22 needed; rejection takes 4 in 256
	)
	got := 0
	for got < n {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range buf {
			if b >= 252 {
				continue
			}
			chars[got] = tokenChars[b%36]
			if got++; got == n {
				break
			}
		}
	}
	id, secret := chars[:bootstrapapi.BootstrapTokenIDBytes], chars[bootstrapapi.BootstrapTokenIDBytes:]
	return bootstraputil.TokenFromIDAndSecret(string(id), string(secret)), nil
}
