package pipeline

import (
	"bufio"
	"errors"
	"io"

	"github.com/kubestrap/kubestrap/generator/output"
)

// SecretMode is the mode of every file a DirSink writes: all but meta-data
// hold a token, and one rule is easier to audit than two.
const SecretMode = 0o600

// DirSink stores documents in an output directory: DIR/<node>/<document>
// and DIR/<file>, made visible all at once by the stage's commit.
type DirSink struct {
	Stage *output.Stage
}

// Node writes the node's documents into its own directory.
func (d DirSink) Node(name string, docs []Document) error {
	files := make([]output.File, len(docs))
	for i, doc := range docs {
		files[i] = output.File{Name: doc.Name, Data: doc.Data, Mode: SecretMode}
	}
	return d.Stage.WriteFiles(name, files)
}

// File streams a top-level file.
func (d DirSink) File(name string, write func(io.Writer) error) error {
	f, err := d.Stage.Create(name, SecretMode)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	if err = write(bw); err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Commit renames the stage into place. Trouble tidying up after that (the
// replaced output, the parent's sync) is a warning: the output is complete.
func (d DirSink) Commit() ([]string, error) {
	err := d.Stage.Commit()
	var cleanup *output.CleanupError
	if errors.As(err, &cleanup) {
		return []string{cleanup.Error()}, nil
	}
	return nil, err
}

// Abort removes everything staged.
func (d DirSink) Abort() error { return d.Stage.Abort() }
