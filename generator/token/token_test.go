package token

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"sigs.k8s.io/yaml"
)

var now = time.Date(2026, 11, 27, 10, 30, 15, 123, time.FixedZone("CST", 8*3600))

func TestNeverPrintsTheSecret(t *testing.T) {
	tok, err := New("abcdef.0123456789abcdef", "n1", now, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{tok.String(), fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok), fmt.Errorf("x: %v", tok).Error()} {
		if strings.Contains(s, "0123456789abcdef") {
			t.Errorf("secret printed: %s", s)
		}
	}
	if tok.Value() != "abcdef.0123456789abcdef" {
		t.Errorf("Value() = %q", tok.Value())
	}
	if _, err := New("ABCDEF.0123456789abcdef", "n1", now, false); err == nil {
		t.Error("uppercase token accepted")
	}
}

func TestGroup(t *testing.T) {
	for node, want := range map[string]string{
		"kube-node1":           "system:bootstrappers:kube-node1",
		"n1.rack3.example.com": "system:bootstrappers:n1:rack3:example:com",
	} {
		got := Group(node)
		if got != want {
			t.Errorf("Group(%q) = %q, want %q", node, got, want)
		}
		if err := bootstraputil.ValidateBootstrapGroupName(got); err != nil {
			t.Errorf("Group(%q) = %q is not a valid bootstrap group: %v", node, got, err)
		}
	}
	// One-to-one: names that differ only where a dot could be keep apart.
	if Group("a.b") == Group("a-b") {
		t.Error("a.b and a-b map to one group")
	}
}

// The Secret must be what `kubeadm token create --groups
// system:bootstrappers:<node>` makes, with our labels on top.
func TestSecret(t *testing.T) {
	tests := []struct {
		name    string
		node    string
		signing bool
		label   string
	}{
		{"short name", "kube-node1", false, "kube-node1"},
		{"signing", "kube-node1", true, "kube-node1"},
		{"too long for a label", strings.Repeat("a", 70) + ".example.com", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, _ := New("abcdef.0123456789abcdef", tt.node, now.Add(24*time.Hour), tt.signing)
			s := Secret(tok)
			if s.Name != "bootstrap-token-abcdef" || s.Namespace != "kube-system" || s.Type != bootstrapapi.SecretTypeBootstrapToken {
				t.Errorf("name/namespace/type = %s/%s/%s", s.Namespace, s.Name, s.Type)
			}
			want := map[string]string{
				"token-id":                       "abcdef",
				"token-secret":                   "0123456789abcdef",
				"expiration":                     "2026-11-28T02:30:15Z",
				"usage-bootstrap-authentication": "true",
				"description":                    "kubelet bootstrap token for node " + tt.node + " (kubestrap)",
				"auth-extra-groups":              Group(tt.node),
			}
			if tt.signing {
				want["usage-bootstrap-signing"] = "true"
			}
			if len(s.Data) != len(want) {
				t.Errorf("data keys = %d, want %d", len(s.Data), len(want))
			}
			for k, v := range want {
				if string(s.Data[k]) != v {
					t.Errorf("data[%s] = %q, want %q", k, s.Data[k], v)
				}
			}
			got := s.Labels[LabelNode]
			if tt.label != "" && got != tt.label {
				t.Errorf("node label %q, want %q", got, tt.label)
			}
			if tt.label == "" && (!strings.HasPrefix(got, "sha256-") || len(got) > 63) {
				t.Errorf("long name label %q", got)
			}
			if s.Annotations[AnnotationNode] != tt.node {
				t.Errorf("node annotation %q", s.Annotations[AnnotationNode])
			}
		})
	}
}

func TestOfflineMint(t *testing.T) {
	// The generator returns a duplicate id first: Mint must skip it.
	values := []string{"aaaaaa.0000000000000000", "aaaaaa.1111111111111111", "bbbbbb.2222222222222222"}
	o := &Offline{TTL: 24 * time.Hour, Now: func() time.Time { return now }, Generate: func() (string, error) {
		v := values[0]
		values = values[1:]
		return v, nil
	}}
	t1, err := o.Mint("n1")
	if err != nil {
		t.Fatal(err)
	}
	t2, err := o.Mint("n2")
	if err != nil {
		t.Fatal(err)
	}
	if t1.ID != "aaaaaa" || t2.ID != "bbbbbb" {
		t.Errorf("ids %s %s, want aaaaaa bbbbbb", t1.ID, t2.ID)
	}
	if want := time.Date(2026, 11, 28, 2, 30, 15, 0, time.UTC); !t1.Expires.Equal(want) || t1.Expires.Location() != time.UTC {
		t.Errorf("expires %v, want %v", t1.Expires, want)
	}
	broken := &Offline{TTL: time.Hour, Generate: func() (string, error) { return "", errors.New("no entropy") }}
	if _, err := broken.Mint("n1"); err == nil || !strings.Contains(err.Error(), `node "n1": no entropy`) {
		t.Errorf("err = %v", err)
	}
	// The real generator: valid tokens, distinct ids.
	real := &Offline{TTL: time.Hour}
	seen := map[string]bool{}
	for i := range 200 {
		tok, err := real.Mint(fmt.Sprint("n", i))
		if err != nil || !bootstraputil.IsValidBootstrapToken(tok.Value()) || seen[tok.ID] {
			t.Fatalf("mint %d: %v %v", i, tok, err)
		}
		seen[tok.ID] = true
	}
}

func TestManifestsParseBack(t *testing.T) {
	a, _ := New("aaaaaa.0000000000000000", "n1", now, false)
	b, _ := New("bbbbbb.1111111111111111", "n2.example.com", now, true)
	var buf bytes.Buffer
	if err := WriteManifests(&buf, []Token{a, b}); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	docs := strings.Split(strings.TrimPrefix(string(data), "---\n"), "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2:\n%s", len(docs), data)
	}
	for i, want := range []Token{a, b} {
		var s corev1.Secret
		if err := yaml.UnmarshalStrict([]byte(docs[i]), &s); err != nil {
			t.Fatal(err)
		}
		if s.Kind != "Secret" || s.APIVersion != "v1" || string(s.Data["token-id"]) != want.ID || string(s.Data["auth-extra-groups"]) != Group(want.Node) {
			t.Errorf("doc %d: %+v", i, s)
		}
	}
	// kubectl apply -f reads a file with this decoder: every Secret, whole.
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i, want := range []Token{a, b} {
		var s corev1.Secret
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if !reflect.DeepEqual(&s, Secret(want)) {
			t.Errorf("document %d reads back as %+v, want %+v", i, s, Secret(want))
		}
	}
	var extra corev1.Secret
	if err := dec.Decode(&extra); err != io.EOF {
		t.Errorf("after the last Secret: %v, %+v", err, extra)
	}
}
