package model

import (
	"crypto/x509"
	"encoding/pem"
	"time"
)

// checkCA reads the CA that every node will trust the API server with, and
// keeps only its CERTIFICATE blocks in c.CAPEM.
func checkCA(c *Cluster, r *report, now time.Time) {
	if r.isBad("caFile") {
		return
	}
	// Without a file, the CA came from a resolver (the admin kubeconfig or
	// cluster-info) and is checked the same way, named by its source.
	data := c.CAPEM
	fail := func(format string, args ...any) {
		r.addf("caFile", "%s: "+format, append([]any{c.CAFile}, args...)...)
	}
	if c.CAFile == "" {
		if c.CAPEM == nil {
			r.addf("caFile", "required: the CA certificate nodes verify the API server with (or give %s)", flagCAFile)
			return
		}
		fail = func(format string, args ...any) { r.addAt(Pos{File: c.caSource}, "", format, args...) }
	} else {
		var err error
		if data, err = readInput(c.CAFile, maxFileSize); err != nil {
			r.addf("caFile", "%v", err)
			return
		}
	}
	c.CAPEM = nil
	var out []byte
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			// Every node receives this file; a key in it would leak.
			fail("holds a %s block; give the CA certificate alone", b.Type)
			return
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			fail("cannot parse the certificate: %v", err)
			return
		}
		subject := cert.Subject.String()
		switch {
		case !cert.BasicConstraintsValid || !cert.IsCA:
			fail("certificate %s is not a CA (its basic constraints lack CA:TRUE)", quote(subject))
		case now.After(cert.NotAfter):
			fail("certificate %s expired on %s", quote(subject), cert.NotAfter.UTC().Format(time.DateOnly))
		case now.Before(cert.NotBefore):
			fail("certificate %s is not valid before %s", quote(subject), cert.NotBefore.UTC().Format(time.RFC3339))
		}
		out = append(out, pem.EncodeToMemory(b)...)
	}
	if out == nil {
		fail("no PEM CERTIFICATE block")
		return
	}
	c.CAPEM = out
}
