package model

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"path/filepath"
	"strings"
)

// loadNodesFile reads --nodes: a YAML list of nodes or CSV name,ip[,mac]. Its
// nodes replace the other file's, positions included. ok is false when the
// file could not be read at all.
func loadNodesFile(file string, r *report) (nodes []Node, ok bool) {
	data, err := readInput(file, maxFileSize)
	if err != nil {
		r.addAt(flagPos(flagNodesFile), "", "%v", err)
		return nil, false
	}
	r.read(file)
	r.forget("nodes")
	r.pos["nodes"] = Pos{File: file}
	before := r.count()
	if isCSV(file, data) {
		nodes = readNodesCSV(file, data, r)
	} else if decodeYAML(file, data, "nodes", &nodes, r) == yamlBroken {
		return nil, false
	}
	if len(nodes) == 0 && r.count() > before {
		// "at least one node" would only restate the rows' problems.
		r.bad["nodes"] = true
	}
	return nodes, true
}

// isCSV goes by the extension, else by the first line that is not blank or a
// comment: a YAML list starts with "-" (or "[" in flow style), a CSV row with a
// name.
func isCSV(file string, data []byte) bool {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".csv":
		return true
	case ".yaml", ".yml", ".json":
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return !strings.HasPrefix(line, "-") && !strings.HasPrefix(line, "[")
	}
	return false
}

func readNodesCSV(file string, data []byte, r *report) []Node {
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	var nodes []Node
	for first := true; ; first = false {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			// After a quoting error the reader's idea of rows is unreliable.
			r.addAt(Pos{File: file, Line: pe.Line}, "", "%v", pe.Err)
			break
		} else if err != nil {
			r.addAt(Pos{File: file}, "", "%v", err)
			break
		}
		line, _ := cr.FieldPos(0)
		for i := range rec {
			rec[i] = strings.TrimSpace(rec[i])
		}
		if first && len(rec) >= 2 && strings.EqualFold(rec[0], "name") && strings.EqualFold(rec[1], "ip") {
			continue
		}
		if len(rec) < 2 || len(rec) > 3 {
			r.addAt(Pos{File: file, Line: line}, "", "want name,ip[,mac], got %d columns", len(rec))
			continue
		}
		// The row's fields fall back to the row's line; one entry per row
		// keeps a huge file's bookkeeping small.
		r.pos[indexPath("nodes", len(nodes))] = Pos{File: file, Line: line}
		n := Node{Name: rec[0], IP: rec[1]}
		if len(rec) == 3 {
			n.MAC = rec[2]
		}
		nodes = append(nodes, n)
	}
	return nodes
}
