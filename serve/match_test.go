package serve

import (
	"net/url"
	"testing"
)

func TestNormalize(t *testing.T) {
	for _, tt := range []struct {
		key, in string
		want    string
		ok      bool
	}{
		{keyMAC, "52:54:00:aa:00:01", "52:54:00:aa:00:01", true},
		{keyMAC, "52-54-00-aa-00-01", "52:54:00:aa:00:01", true},
		{keyMAC, "52-54-00-AA-00-01", "52:54:00:aa:00:01", true},
		{keyMAC, "52:54:00:AA:00:01", "52:54:00:aa:00:01", true},
		{keyMAC, "525400aa0001", "52:54:00:aa:00:01", true},
		{keyMAC, "525400AA0001", "52:54:00:aa:00:01", true},
		{keyMAC, "5254.00aa.0001", "52:54:00:aa:00:01", true},
		{keyMAC, "  52:54:00:aa:00:01\t", "52:54:00:aa:00:01", true},
		{keyMAC, "", "", false},
		{keyMAC, "52:54:00:aa:00", "", false},
		{keyMAC, "525400aa00zz", "", false},
		{keyMAC, "525400aa00011", "", false},
		// 20-byte InfiniBand and 8-byte EUI-64 addresses are no node's.
		{keyMAC, "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "", false},
		{keyMAC, "02:00:5e:10:00:00:00:01", "", false},
		{keyUUID, "4C4C4544-0037-3010-8030-B7C04F4E4E32", "4c4c4544-0037-3010-8030-b7c04f4e4e32", true},
		{keyUUID, "4c4c4544003730108030b7c04f4e4e32", "4c4c4544-0037-3010-8030-b7c04f4e4e32", true},
		{keyUUID, "{4c4c4544-0037-3010-8030-b7c04f4e4e32}", "4c4c4544-0037-3010-8030-b7c04f4e4e32", true},
		{keyUUID, "not-a-uuid", "", false},
		{keyHostname, "Rack1-A.Example.COM.", "rack1-a.example.com", true},
		{keyHostname, " rack1-b ", "rack1-b", true},
		{keySerial, "SN-A-0001", "SN-A-0001", true},
		{keySerial, "Not Specified", "Not Specified", true},
		{keySerial, string(make([]byte, 257)), "", false},
	} {
		got, ok := normalize(tt.key, tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("normalize(%s, %q) = %q, %v; want %q, %v", tt.key, tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestMatch: every key given that the node list knows must name one node;
// what it does not know is ignored.
func TestMatch(t *testing.T) {
	c := testCluster(t)
	ix := newIndex(c.Nodes)
	name := func(i int) string {
		if i < 0 {
			return ""
		}
		return c.Nodes[i].Name
	}
	const (
		macA  = "52:54:00:aa:00:01"
		uuidA = "4c4c4544-0037-3010-8030-b7c04f4e4e32"
		uuidB = "4c4c4544-0037-3010-8030-b7c04f4e4e33"
	)
	for _, tt := range []struct {
		name, query string
		want        string // "" for none
		which       [2]string
	}{
		{"mac colons", "mac=52:54:00:aa:00:01", "node-a", [2]string{"mac", macA}},
		{"mac hyphens (iPXE hexhyp)", "mac=52-54-00-aa-00-01", "node-a", [2]string{"mac", macA}},
		{"mac bare", "mac=525400aa0001", "node-a", [2]string{"mac", macA}},
		{"mac uppercase", "mac=52-54-00-AA-00-01", "node-a", [2]string{"mac", macA}},
		{"mac dotted", "mac=5254.00aa.0002", "node-b", [2]string{"mac", "52:54:00:aa:00:02"}},
		{"static network's mac", "mac=52:54:00:aa:00:03", "node-c", [2]string{"mac", "52:54:00:aa:00:03"}},
		{"uuid uppercase", "uuid=4C4C4544-0037-3010-8030-B7C04F4E4E32", "node-a", [2]string{"uuid", uuidA}},
		{"serial", "serial=SN-B-0002", "node-b", [2]string{"serial", "SN-B-0002"}},
		{"serial with ${", "serial=D%24%7Bx%7D%2F1%252%263", "node-d", [2]string{"serial", "D${x}/1%2&3"}},
		{"hostname with dot and case", "hostname=RACK1-A.example.com.", "node-a", [2]string{"hostname", "rack1-a.example.com"}},
		{"all of one node", "mac=52-54-00-aa-00-02&uuid=" + uuidB + "&serial=SN-B-0002&hostname=rack1-b", "node-b", [2]string{"mac", "52:54:00:aa:00:02"}},
		{"boot.ipxe's chain, empty values", "mac=52-54-00-aa-00-02&uuid=&serial=&hostname=", "node-b", [2]string{"mac", "52:54:00:aa:00:02"}},
		{"firmware filler ignored", "mac=52-54-00-aa-00-01&serial=Not%20Specified&uuid=03000200-0400-0500-0006-000700080009", "node-a", [2]string{"mac", macA}},
		{"unknown mac, known uuid", "mac=52-54-00-ff-ff-ff&uuid=" + uuidB, "node-b", [2]string{"uuid", uuidB}},
		{"malformed mac, known hostname", "mac=zz&hostname=rack1-b", "node-b", [2]string{"hostname", "rack1-b"}},
		{"mac of A, uuid of B", "mac=52:54:00:aa:00:01&uuid=" + uuidB, "", [2]string{}},
		{"serial of A, hostname of B", "serial=SN-A-0001&hostname=rack1-b", "", [2]string{}},
		{"two macs of two nodes", "mac=52:54:00:aa:00:01&mac=52:54:00:aa:00:02", "", [2]string{}},
		{"unknown mac", "mac=52:54:00:ff:ff:ff", "", [2]string{}},
		{"firmware's nil uuid", "uuid=00000000-0000-0000-0000-000000000000", "", [2]string{}},
		{"empty mac", "mac=", "", [2]string{}},
		{"nothing", "", "", [2]string{}},
		{"other keys only", "ip=172.27.129.111&name=node-b", "", [2]string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			i, which, why := ix.match(q)
			if name(i) != tt.want {
				t.Fatalf("match(%s) = %s (%s), want %q", tt.query, name(i), why, tt.want)
			}
			if tt.want != "" && (which != tt.which || why != "") {
				t.Errorf("which %v why %q, want %v", which, why, tt.which)
			}
			if tt.want == "" && why == "" {
				t.Error("no reason for no match")
			}
		})
	}
}

func TestMatchSegment(t *testing.T) {
	c := testCluster(t)
	ix := newIndex(c.Nodes)
	for _, tt := range []struct {
		seg, want string
	}{
		{"52-54-00-aa-00-01", "node-a"},
		{"52:54:00:AA:00:01", "node-a"},
		{"525400aa0002", "node-b"},
		{"4c4c4544-0037-3010-8030-b7c04f4e4e33", "node-b"},
		{"SN-A-0001", "node-a"},
		{"rack1-b", "node-b"},
		{"Rack1-A.example.com", "node-a"},
		{"D${x}/1%2&3", "node-d"},
		{"52-54-00-ff-ff-ff", ""},
		{"node-a", ""}, // a name is not how a machine knows itself
		{"", ""},
	} {
		i, _, why := ix.matchSegment(tt.seg)
		got := ""
		if i >= 0 {
			got = c.Nodes[i].Name
		}
		if got != tt.want {
			t.Errorf("matchSegment(%q) = %q (%s), want %q", tt.seg, got, why, tt.want)
		}
	}
}
