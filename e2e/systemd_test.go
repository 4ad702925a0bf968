package e2e

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/unit"
)

// execStart reads a unit file and its drop-ins, in the order systemd
// applies them, and returns the one ExecStart= command line they leave, as
// the argv systemd would run: an empty ExecStart= drops those before it.
func execStart(paths ...string) ([]string, error) {
	var values []string
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		opts, err := unit.DeserializeOptions(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, o := range opts {
			if o.Section == "Service" && o.Name == "ExecStart" {
				if o.Value == "" {
					values = nil
				} else {
					values = append(values, o.Value)
				}
			}
		}
	}
	if len(values) != 1 {
		return nil, fmt.Errorf("%s: want one ExecStart= in [Service], found %d", strings.Join(paths, ", "), len(values))
	}
	argv, err := execArgv(values[0])
	if err != nil {
		return nil, fmt.Errorf("%s: ExecStart: %w", strings.Join(paths, ", "), err)
	}
	return argv, nil
}

// execArgv splits an ExecStart= value as systemd does (systemd.syntax(7),
// systemd.service(5) "Command lines"):
//   - a backslash ending a line joins it to the next one, as a space (go-systemd
//     keeps the backslash and the newline in the value);
//   - words are separated by whitespace; single and double quotes group,
//     anywhere in a word; C-style backslash escapes are decoded, in quotes
//     and out;
//   - in each word "%%" is "%" (specifiers) and "$$" is "$" (environment).
//
// What this test has no use for is refused rather than half-done: other
// specifiers, $VAR references, and the executable prefixes @-:+!.
func execArgv(value string) ([]string, error) {
	value = strings.ReplaceAll(value, "\\\n", " ")
	var argv []string
	s := value
	for {
		s = strings.TrimLeft(s, " \t\n\r")
		if s == "" {
			break
		}
		var word strings.Builder
		var quote byte
	word:
		for s != "" {
			c := s[0]
			switch {
			case c == '\\':
				r, n, err := unescape(s)
				if err != nil {
					return nil, err
				}
				word.WriteRune(r)
				s = s[n:]
				continue
			case quote != 0 && c == quote:
				quote = 0
			case quote != 0:
				word.WriteByte(c)
			case c == '"' || c == '\'':
				quote = c
			case strings.IndexByte(" \t\n\r", c) >= 0:
				break word
			default:
				word.WriteByte(c)
			}
			s = s[1:]
		}
		if quote != 0 {
			return nil, fmt.Errorf("unterminated %c quote in %q", quote, value)
		}
		w, err := expand(word.String())
		if err != nil {
			return nil, err
		}
		argv = append(argv, w)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("empty command line")
	}
	if strings.ContainsAny(argv[0][:1], "@-:+!") {
		return nil, fmt.Errorf("executable prefix %q is not supported here", argv[0][:1])
	}
	return argv, nil
}

// unescape decodes the C-style escape at the start of s (systemd's
// cunescape_one) and returns the rune and the bytes it used.
func unescape(s string) (rune, int, error) {
	if len(s) < 2 {
		return 0, 0, errors.New("backslash at the end of the command line")
	}
	simple := map[byte]rune{'a': '\a', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v',
		'\\': '\\', '"': '"', '\'': '\'', 's': ' '}
	if r, ok := simple[s[1]]; ok {
		return r, 2, nil
	}
	hexLen := map[byte]int{'x': 2, 'u': 4, 'U': 8}[s[1]]
	if hexLen > 0 && len(s) >= 2+hexLen {
		if v, err := strconv.ParseUint(s[2:2+hexLen], 16, 32); err == nil && utf8.ValidRune(rune(v)) && v != 0 {
			return rune(v), 2 + hexLen, nil
		}
	}
	if s[1] >= '0' && s[1] <= '7' && len(s) >= 4 {
		if v, err := strconv.ParseUint(s[1:4], 8, 32); err == nil && v != 0 {
			return rune(v), 4, nil
		}
	}
	return 0, 0, fmt.Errorf("unsupported escape %q", s[:2])
}

// expand resolves "%%" and "$$" in one word and refuses other specifiers and
// variable references.
func expand(w string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c != '%' && c != '$' {
			b.WriteByte(c)
			continue
		}
		if i+1 < len(w) && w[i+1] == c {
			b.WriteByte(c)
			i++
			continue
		}
		if c == '%' {
			return "", fmt.Errorf("specifier in %q: only %%%% is supported here", w)
		}
		return "", fmt.Errorf("variable reference in %q: only $$ is supported here (the unit sets no Environment=)", w)
	}
	return b.String(), nil
}

// TestExecArgv runs without the cluster: the splitter the e2e test trusts to
// start the kubelet exactly as systemd would.
func TestExecArgv(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "/opt/k8s/bin/kubelet \\\n  --config=/etc/kubernetes/kubelet.config.json \\\n  --v=2",
			want: []string{"/opt/k8s/bin/kubelet", "--config=/etc/kubernetes/kubelet.config.json", "--v=2"}},
		// What the product's execQuote writes for awkward values.
		{in: `/usr/bin/kubelet "--node-labels=a=b c" "--x=back\\slash \"q\""`,
			want: []string{"/usr/bin/kubelet", "--node-labels=a=b c", `--x=back\slash "q"`}},
		{in: `/bin/k --p=100%% --d=$$HOME`, want: []string{"/bin/k", "--p=100%", "--d=$HOME"}},
		{in: `/bin/k 'single "x"' mid"dle quote"d \x41\101\s`, want: []string{"/bin/k", `single "x"`, "middle quoted", "AA "}},
		{in: `/bin/k --p=%n`, err: true},
		{in: `/bin/k --d=$HOME`, err: true},
		{in: `/bin/k --d=${HOME}`, err: true},
		{in: `-/bin/k`, err: true},
		{in: `/bin/k "open`, err: true},
		{in: `/bin/k trailing\`, err: true},
		{in: "  ", err: true},
	} {
		got, err := execArgv(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("execArgv(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("execArgv(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
