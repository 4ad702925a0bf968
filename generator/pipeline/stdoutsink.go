package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/kubestrap/kubestrap/generator/output"
)

// StdoutSink writes one node's one document to W, for a pipe
// (virt-install --cloud-init user-data=<(kubestrap …), Terraform). Nothing
// reaches W before Commit, so a failed run prints nothing. The tokens' own
// file, if the provider writes one, goes to Tokens, a new file.
type StdoutSink struct {
	W io.Writer
	// Document is the name of the document to write (config.ign,
	// user-data, rootfs.tar).
	Document string
	// Tokens is where the provider's file goes; "" refuses one.
	Tokens string

	mu     sync.Mutex
	doc    []byte
	nodes  int
	tokens []byte
}

// Node keeps the node's document.
func (s *StdoutSink) Node(name string, docs []Document) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes++
	if s.nodes > 1 {
		return fmt.Errorf("standard output takes one node's document, and node %s is a second one", name)
	}
	for _, d := range docs {
		if d.Name == s.Document {
			s.doc = d.Data
			return nil
		}
	}
	return fmt.Errorf("node %s has no %s", name, s.Document)
}

// File keeps the tokens' file for Commit.
func (s *StdoutSink) File(name string, write func(io.Writer) error) error {
	if name != TokensName || s.Tokens == "" {
		return fmt.Errorf("%s has nowhere to go with the document on standard output (give --tokens FILE)", name)
	}
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return err
	}
	s.mu.Lock()
	s.tokens = buf.Bytes()
	s.mu.Unlock()
	return nil
}

// Commit writes the tokens' file, then the document.
func (s *StdoutSink) Commit() ([]string, error) {
	if s.doc == nil {
		return nil, errors.New("no document to write")
	}
	if s.tokens != nil {
		if err := output.CreateFile(s.Tokens, s.tokens, SecretMode); err != nil {
			return nil, err
		}
	}
	if _, err := s.W.Write(s.doc); err != nil {
		if s.tokens != nil {
			// Without the document they are of no use; they are ours,
			// just written. (A closed pipe usually ends the process with
			// SIGPIPE before this: the file then stays, and is harmless
			// until someone applies it.)
			os.Remove(s.Tokens)
		}
		return nil, fmt.Errorf("writing to standard output: %w", err)
	}
	return nil, nil
}

// Abort forgets what it kept.
func (s *StdoutSink) Abort() error {
	s.mu.Lock()
	s.doc, s.tokens = nil, nil
	s.mu.Unlock()
	return nil
}
