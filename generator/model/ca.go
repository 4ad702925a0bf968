package model

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"time"
)

// checkCA reads the CA that every node will trust the API server with, and
// keeps only its CERTIFICATE blocks in c.CAPEM.
func checkCA(c *Cluster, r *report, now time.Time) {
	if c.CAFile == "" {
		if !r.isBad("caFile") {
			r.addf("caFile", "required: the CA certificate nodes verify the API server with (or give %s)", flagCAFile)
		}
		return
	}
	data, err := os.ReadFile(c.CAFile)
	if err != nil {
		r.addf("caFile", "%v", err)
		return
	}
	var out []byte
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			// Every node receives this file; a key in it would leak.
			r.addf("caFile", "%s: holds a %s block; give the CA certificate alone", c.CAFile, b.Type)
			return
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			r.addf("caFile", "%s: cannot parse the certificate: %v", c.CAFile, err)
			return
		}
		name := cert.Subject.String()
		switch {
		case !cert.BasicConstraintsValid || !cert.IsCA:
			r.addf("caFile", "%s: certificate %q is not a CA (its basic constraints lack CA:TRUE)", c.CAFile, name)
		case now.After(cert.NotAfter):
			r.addf("caFile", "%s: certificate %q expired on %s", c.CAFile, name, cert.NotAfter.UTC().Format(time.DateOnly))
		case now.Before(cert.NotBefore):
			r.addf("caFile", "%s: certificate %q is not valid before %s", c.CAFile, name, cert.NotBefore.UTC().Format(time.RFC3339))
		}
		out = append(out, pem.EncodeToMemory(b)...)
	}
	if out == nil {
		r.addf("caFile", "%s: no PEM CERTIFICATE block", c.CAFile)
		return
	}
	c.CAPEM = out
}
