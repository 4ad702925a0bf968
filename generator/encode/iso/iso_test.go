package iso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// token is a made-up bootstrap token: the tests check it never reaches an
// error message.
const token = "abcdef.0123456789abcdef"

// seed returns a NoCloud seed like the generator's: an ~8 KB user-data
// holding a token, meta-data, network-config.
func seed() []File {
	var ud strings.Builder
	ud.WriteString("#cloud-config\nwrite_files:\n")
	for i := 0; ud.Len() < 8<<10; i++ {
		fmt.Fprintf(&ud, "  - path: /etc/kubestrap/part-%03d\n    permissions: '0600'\n    content: |\n      token: %s\n", i, token)
	}
	return []File{
		{Name: "user-data", Data: []byte(ud.String())},
		{Name: "meta-data", Data: []byte("instance-id: node-1\nlocal-hostname: node-1\n")},
		{Name: "network-config", Data: []byte("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")},
	}
}

// edgeSeed adds files at the layout's edges: an empty one, one exactly a
// sector long, one spanning many sectors, names with dots and underscores.
func edgeSeed() []File {
	big := make([]byte, 300<<10+7)
	for i := range big {
		big[i] = byte(i*7 + i>>9)
	}
	return append(seed(),
		File{Name: "vendor-data", Data: []byte{}},
		File{Name: "exactly.one_sector", Data: bytes.Repeat([]byte{0xA5}, sectorSize)},
		File{Name: "Big.Blob.bin", Data: big},
	)
}

// needTool skips the test when name is not installed, or fails it under CI
// (CI=true makes validator tests fail, not skip).
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed (Debian package %s)", name, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return p
}

// writeImage writes img to a test-owned file and returns its path.
func writeImage(t *testing.T, img []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cidata.iso")
	if err := os.WriteFile(p, img, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustNoCloud(t testing.TB, files []File) []byte {
	t.Helper()
	img, err := NoCloud(files)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestReadBack reads the image back with go-diskfs' own reader: every file
// byte for byte, the label, and the normalized owner, modes and dates.
func TestReadBack(t *testing.T) {
	files := edgeSeed()
	img := mustNoCloud(t, files)

	if len(img)%sectorSize != 0 {
		t.Errorf("image is %d bytes, not whole sectors", len(img))
	}
	if vol := int(binary.LittleEndian.Uint32(img[16*sectorSize+80:])); vol*sectorSize != len(img) {
		t.Errorf("image is %d bytes, its volume %d sectors", len(img), vol)
	}

	fsys, err := iso9660.Read(&memStorage{b: img}, int64(len(img)), 0, sectorSize)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimRight(fsys.Label(), " "); got != Label {
		t.Errorf("label %q, want %q", got, Label)
	}
	entries, err := fsys.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var names, want []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, f := range files {
		want = append(want, f.Name)
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("root holds %q, want %q", names, want)
	}
	for _, f := range files {
		got, err := fsys.ReadFile(f.Name)
		if err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("%s: read back %d bytes that differ from the %d written", f.Name, len(got), len(f.Data))
		}
		fi, err := fsys.Stat(f.Name)
		if err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		if fi.Mode() != 0o400 {
			t.Errorf("%s: mode %v, want -r--------", f.Name, fi.Mode())
		}
		if !fi.ModTime().Equal(epoch) {
			t.Errorf("%s: modification time %v, want %v", f.Name, fi.ModTime(), epoch)
		}
		st, ok := fi.Sys().(*iso9660.StatT)
		if !ok || !st.RockRidge {
			t.Errorf("%s: no Rock Ridge attributes", f.Name)
			continue
		}
		if st.UID != 0 || st.GID != 0 || st.NLink != 1 {
			t.Errorf("%s: owner %d:%d, links %d; want 0:0, 1", f.Name, st.UID, st.GID, st.NLink)
		}
	}
}

// jolietFiles reads the Joliet tree's root, as a Joliet-only reader would
// (Windows; Linux with -o norock): name to content.
func jolietFiles(t *testing.T, img []byte) map[string][]byte {
	t.Helper()
	for s := 16; (s+1)*sectorSize <= len(img); s++ {
		vd := img[s*sectorSize : (s+1)*sectorSize]
		if vd[0] == 255 {
			break
		}
		if vd[0] != 2 || string(vd[88:91]) != "%/E" {
			continue
		}
		loc := int(binary.LittleEndian.Uint32(vd[158:]))
		size := int(binary.LittleEndian.Uint32(vd[166:]))
		if (loc+1)*sectorSize > len(img) || loc*sectorSize+size > len(img) {
			t.Fatalf("Joliet root directory at sector %d (%d bytes) is outside the image", loc, size)
		}
		dir := img[loc*sectorSize : loc*sectorSize+size]
		files := map[string][]byte{}
		for off := 0; off < len(dir); {
			n := int(dir[off])
			if n == 0 {
				off = (off/sectorSize + 1) * sectorSize
				continue
			}
			rec := dir[off : off+n]
			off += n
			name := rec[33 : 33+int(rec[32])]
			if len(name) == 1 && name[0] <= 1 {
				continue // . and ..
			}
			var u []rune
			for i := 0; i+1 < len(name); i += 2 {
				u = append(u, rune(name[i])<<8|rune(name[i+1]))
			}
			at := int(binary.LittleEndian.Uint32(rec[2:])) * sectorSize
			length := int(binary.LittleEndian.Uint32(rec[10:]))
			if at+length > len(img) {
				t.Fatalf("Joliet %q: %d bytes at %d are outside the image", string(u), length, at)
			}
			files[string(u)] = img[at : at+length]
		}
		return files
	}
	t.Fatal("no Joliet volume descriptor")
	return nil
}

// tricky are seeds whose last file in the layout is empty or ends on a
// sector boundary: go-diskfs then pads it over the Joliet root directory
// (see memStorage).
func tricky() map[string][]File {
	return map[string][]File{
		"edge":                edgeSeed(),
		"empty vendor-data":   append(seed(), File{Name: "vendor-data"}),
		"user-data 2 sectors": {{Name: "meta-data", Data: []byte("instance-id: a\n")}, {Name: "user-data", Data: bytes.Repeat([]byte("#"), 2*sectorSize)}},
		"only an empty file":  {{Name: "meta-data"}},
	}
}

// TestJoliet reads every file back from the Joliet tree.
func TestJoliet(t *testing.T) {
	for name, files := range tricky() {
		t.Run(name, func(t *testing.T) {
			got := jolietFiles(t, mustNoCloud(t, files))
			if len(got) != len(files) {
				t.Errorf("Joliet root holds %d files, want %d", len(got), len(files))
			}
			for _, f := range files {
				if data, ok := got[f.Name]; !ok {
					t.Errorf("Joliet root has no %s", f.Name)
				} else if !bytes.Equal(data, f.Data) {
					t.Errorf("Joliet %s: %d bytes that differ from the %d written", f.Name, len(data), len(f.Data))
				}
			}
		})
	}
}

// plainStorage is a memStorage whose zero writes do overwrite.
type plainStorage struct{ memStorage }

func (p *plainStorage) WriteAt(b []byte, off int64) (int, error) {
	if end := off + int64(len(b)); end > int64(len(p.b)) {
		p.b = append(p.b, make([]byte, end-int64(len(p.b)))...)
	}
	return copy(p.b[off:], b), nil
}
func (p *plainStorage) Writable() (backend.WritableFile, error) { return p, nil }

// TestGoDiskfsPaddingOverrun is a canary: it tells whether go-diskfs still
// pads an empty last file over the Joliet root directory, i.e. whether
// memStorage's zero-write rule is still needed.
func TestGoDiskfsPaddingOverrun(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []File{{Name: "meta-data", Data: []byte("instance-id: a\n")}, {Name: "vendor-data"}} {
		if err := os.WriteFile(filepath.Join(dir, f.Name), f.Data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var p plainStorage
	fsys, err := iso9660.Create(&p, 0, 0, sectorSize, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.Finalize(iso9660.FinalizeOptions{RockRidge: true, Joliet: true, VolumeIdentifier: Label}); err != nil {
		t.Fatal(err)
	}
	if n := len(jolietFiles(t, p.b)); n == 2 {
		t.Log("go-diskfs no longer pads over the Joliet tree: memStorage's zero-write rule may be dropped")
	} else {
		t.Logf("go-diskfs still pads an empty last file over the Joliet root (it lists %d of 2 files): memStorage's zero-write rule is needed", n)
	}
}

// TestDeterministic builds the same seed twice, over a second apart (the
// coarsest date the library records has one-second resolution), in
// different time zones and orders, and wants the same bytes. It also shows what normalize
// is for: the library's own images of the same files differ.
func TestDeterministic(t *testing.T) {
	files := edgeSeed()
	sorted, err := check(files)
	if err != nil {
		t.Fatal(err)
	}
	raw1, err := build(sorted, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := mustNoCloud(t, files)

	time.Sleep(1100 * time.Millisecond)
	// go-diskfs records dates in the local time zone: change it too.
	local := time.Local
	time.Local = time.FixedZone("UTC+5:30", 5*3600+1800)
	t.Cleanup(func() { time.Local = local })

	raw2, err := build(sorted, nil)
	if err != nil {
		t.Fatal(err)
	}
	reversed := slices.Clone(files)
	slices.Reverse(reversed)
	second := mustNoCloud(t, reversed)

	if !bytes.Equal(first, second) {
		t.Errorf("two images of the same files differ in %d bytes", diffCount(first, second))
	}
	if n := diffCount(raw1, raw2); n == 0 {
		t.Log("go-diskfs' own images are now identical: normalize may be redundant")
	} else {
		t.Logf("go-diskfs' own images of the same files differ in %d bytes (dates); normalize makes them equal", n)
	}
	for i, raw := range [][]byte{raw1, raw2} {
		norm, err := normalize(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(norm, first) {
			t.Errorf("normalized image %d differs from NoCloud's in %d bytes", i+1, diffCount(norm, first))
		}
	}
}

func diffCount(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// TestConcurrent: calls share nothing (each has its own workspace).
func TestConcurrent(t *testing.T) {
	files := seed()
	want := mustNoCloud(t, files)
	var wg sync.WaitGroup
	imgs := make([][]byte, 4)
	errs := make([]error, 4)
	for i := range imgs {
		wg.Go(func() { imgs[i], errs[i] = NoCloud(files) })
	}
	wg.Wait()
	for i := range imgs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(imgs[i], want) {
			t.Errorf("concurrent image %d differs", i)
		}
	}
}

// TestStaging checks the one place the files touch disk: a directory only
// the user can read, under $TMPDIR, holding just the files, gone when
// NoCloud returns, whether it succeeds or fails.
func TestStaging(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // os.TempDir on unix
	if runtime.GOOS == "windows" {
		t.Setenv("TMP", tmp)
	}

	files := seed()
	var staged string
	check := func(dir string) error {
		staged = dir
		if filepath.Dir(dir) != tmp {
			t.Errorf("staging directory %s is not in $TMPDIR %s", dir, tmp)
		}
		if runtime.GOOS == "windows" {
			return nil // no unix modes
		}
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("staging directory mode %v, want drwx------", fi.Mode())
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		if len(entries) != len(files) {
			t.Errorf("staging directory holds %d entries, want %d", len(entries), len(files))
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				return err
			}
			if !info.Mode().IsRegular() || info.Mode().Perm()&0o077 != 0 {
				t.Errorf("staged %s: mode %v, want a file only its owner can read", e.Name(), info.Mode())
			}
		}
		return nil
	}
	if _, err := noCloud(files, check); err != nil {
		t.Fatal(err)
	}
	if staged == "" {
		t.Fatal("nothing was staged")
	}
	assertEmpty(t, tmp)

	// A failure after staging removes the workspace too.
	boom := errors.New("boom")
	if _, err := noCloud(files, func(dir string) error { staged = dir; return boom }); !errors.Is(err, boom) {
		t.Fatalf("error %v, want %v", err, boom)
	}
	if _, err := os.Stat(staged); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging directory %s left behind after a failure (%v)", staged, err)
	}
	assertEmpty(t, tmp)
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func TestRejects(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ok := func(name string) File { return File{Name: name, Data: []byte(token)} }
	tooMany := make([]File, maxFiles+1)
	for i := range tooMany {
		tooMany[i] = ok(fmt.Sprintf("f%d", i))
	}
	half := make([]byte, maxTotalSize/2+1)
	for _, tc := range []struct {
		name  string
		files []File
		want  string
	}{
		{"no files", nil, "no files"},
		{"empty name", []File{ok("")}, "empty file name"},
		{"dot", []File{ok(".")}, "not a file's"},
		{"dot dot", []File{ok("..")}, "not a file's"},
		{"slash", []File{ok("a/b")}, `has '/'`},
		{"backslash", []File{ok(`a\b`)}, `has '\\'`},
		{"leading slash", []File{ok("/user-data")}, `has '/'`},
		{"space", []File{ok("user data")}, `has ' '`},
		{"NUL", []File{ok("user\x00data")}, `has '\x00'`},
		{"non-ASCII", []File{ok("üser-data")}, "has"},
		{"trailing dot", []File{ok("user-data.")}, "ends in '.'"},
		{"Windows device", []File{ok("NUL.txt")}, "Windows device"},
		{"too long", []File{ok(strings.Repeat("a", maxNameLen+1))}, "longer than"},
		{"duplicate", []File{ok("user-data"), ok("meta-data"), ok("user-data")}, "given twice"},
		{"case", []File{ok("user-data"), ok("User-Data")}, "differ only in case"},
		{"too many", tooMany, "more than 64"},
		{"too big", []File{{Name: "a", Data: half}, {Name: "b", Data: half}}, "more than 67108864 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := NoCloud(tc.files)
			if err == nil {
				t.Fatalf("no error (%d-byte image)", len(img))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error %q quotes a file's content", err)
			}
		})
	}
	assertEmpty(t, tmp) // nothing was staged
	// The largest total allowed is fine.
	if _, err := check([]File{{Name: "a", Data: half[:maxTotalSize/2]}, {Name: "b", Data: half[:maxTotalSize/2]}}); err != nil {
		t.Errorf("64 MiB in all: %v", err)
	}
}

// TestBlkid asks util-linux's blkid, as udev does on a node, what the image
// is: NoCloud finds its seed by TYPE and LABEL.
func TestBlkid(t *testing.T) {
	blkid := needTool(t, "blkid", "util-linux")
	p := writeImage(t, mustNoCloud(t, seed()))
	// -c /dev/null: probe the file, neither read nor write a cache.
	out, err := exec.Command(blkid, "-c", "/dev/null", "-o", "export", p).CombinedOutput()
	if err != nil {
		t.Fatalf("blkid: %v\n%s", err, out)
	}
	got := map[string]string{}
	for line := range strings.Lines(string(out)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		got[k] = v
	}
	if got["TYPE"] != "iso9660" || got["LABEL"] != Label {
		t.Errorf("blkid says TYPE=%q LABEL=%q, want iso9660, %s:\n%s", got["TYPE"], got["LABEL"], Label, out)
	}
}

// TestIsoinfo reads the image with an independent ISO 9660 reader,
// genisoimage's isoinfo: both extensions are there, and both the Rock
// Ridge and the Joliet tree give back every file byte for byte.
func TestIsoinfo(t *testing.T) {
	isoinfo := needTool(t, "isoinfo", "genisoimage")
	files := edgeSeed()
	p := writeImage(t, mustNoCloud(t, files))
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(isoinfo, append(args, "-i", p)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Fatalf("isoinfo %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return out
	}

	desc := string(run("-d"))
	for _, want := range []string{
		"Volume id: " + Label + "\n",
		"Logical block size is: 2048\n",
		"Joliet with UCS level 3 found\n",
		"Rock Ridge signatures version 1 found\n",
	} {
		if !strings.Contains(desc, want) {
			t.Errorf("isoinfo -d does not say %q:\n%s", strings.TrimSpace(want), desc)
		}
	}
	if want := fmt.Sprintf("Volume size is: %d\n", len(mustNoCloud(t, files))/sectorSize); !strings.Contains(desc, want) {
		t.Errorf("isoinfo -d does not say %q:\n%s", strings.TrimSpace(want), desc)
	}

	extract := func(t *testing.T, p string, files []File) {
		for _, tree := range []string{"-R", "-J"} {
			for _, f := range files {
				out, err := exec.Command(isoinfo, tree, "-x", "/"+f.Name, "-i", p).Output()
				if err != nil {
					t.Fatalf("isoinfo %s -x /%s: %v", tree, f.Name, err)
				}
				if !bytes.Equal(out, f.Data) {
					t.Errorf("isoinfo %s -x /%s: %d bytes that differ from the %d written", tree, f.Name, len(out), len(f.Data))
				}
			}
		}
	}
	extract(t, p, files)
	for name, files := range tricky() {
		t.Run(name, func(t *testing.T) { extract(t, writeImage(t, mustNoCloud(t, files)), files) })
	}

	// The Rock Ridge listing: root-owned, read-only for root, the epoch.
	listing := string(run("-R", "-l"))
	for _, f := range files {
		re := regexp.MustCompile(`(?m)^-r-------- +1 +0 +0 +` + fmt.Sprint(len(f.Data)) + ` Jan  1 1970 \[ *\d+ 00\]  ` + regexp.QuoteMeta(f.Name) + ` *$`)
		if !re.MatchString(listing) {
			t.Errorf("isoinfo -R -l does not list %s as -r-------- 0 0 %d Jan 1 1970:\n%s", f.Name, len(f.Data), listing)
		}
	}
	if !regexp.MustCompile(`(?m)^dr-xr-xr-x +2 +0 +0 +\d+ Jan  1 1970 \[ *\d+ 02\]  \. *$`).MatchString(listing) {
		t.Errorf("isoinfo -R -l does not list the root as dr-xr-xr-x 0 0 Jan 1 1970:\n%s", listing)
	}
}

// BenchmarkNoCloud: an ~8 KB user-data and a meta-data.
func BenchmarkNoCloud(b *testing.B) {
	files := seed()[:2]
	var img []byte
	for b.Loop() {
		img = mustNoCloud(b, files)
	}
	b.ReportMetric(float64(len(img)), "image-bytes")
}
