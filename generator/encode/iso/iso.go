// Package iso writes the seed image cloud-init's NoCloud datasource reads: an
// ISO 9660 volume labelled "cidata", with Rock Ridge and Joliet extensions,
// holding user-data, meta-data and network-config at its root.
//
// The image is laid out by github.com/diskfs/go-diskfs (filesystem/iso9660).
// That library (v1.9.4) can only stage the files in a directory on disk: its
// Finalize walks a workspace directory with the os package, and offers no
// in-memory or fs.FS source. So NoCloud stages them in a private directory
// (os.MkdirTemp, mode 0700, under $TMPDIR or the OS default; files 0600,
// created with O_EXCL) that it removes before returning, on every path. The
// image itself is built in memory: the library writes it through a
// backend.Storage of ours over a byte slice.
//
// The library also stamps the image with the time it is built (volume
// descriptors), the staged files' times (directory records and Rock Ridge TF
// entries, in the local time zone), and the owner, modes and link counts of
// the staged files (Rock Ridge PX entries). It has no option for any of it,
// so NoCloud rewrites those fields after Finalize (see normalize): every date
// becomes the Unix epoch (the volume's expiration and effective dates are
// left "not specified"), every owner root (0:0), every file mode 0400 and
// the root directory's 0555. The same files then always give the same bytes.
// Two more things are worked around: see memStorage (a padding overrun that
// wipes the Joliet tree) and normalize (identifier padding, image length).
package iso

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// Label is the volume label cloud-init's NoCloud datasource looks for.
const Label = "cidata"

// File is one file at the image's root.
type File struct {
	Name string
	Data []byte
}

const (
	// maxTotalSize bounds the files' total size: a seed holds a few
	// kilobytes of YAML, and the library copies every byte through disk.
	maxTotalSize = 64 << 20
	// maxFiles bounds the entries at the root (NoCloud reads four names).
	maxFiles = 64
	// maxNameLen is Joliet's limit on a name (64 UCS-2 characters).
	maxNameLen = 64

	sectorSize = 2048

	// The Rock Ridge modes written for every file and for the root
	// directory: the seed holds a bootstrap token, and only cloud-init
	// (root) reads it.
	fileMode = 0o100400 // S_IFREG | r--------
	dirMode  = 0o040555 // S_IFDIR | r-xr-xr-x
)

// epoch is the one date the image records.
var epoch = time.Unix(0, 0).UTC()

// NoCloud returns an ISO 9660 image (Rock Ridge and Joliet extensions,
// volume label "cidata") holding files at its root, e.g. user-data,
// meta-data, network-config. Deterministic: the same files give the same
// bytes, whatever their order (every recorded date is the Unix epoch, every
// owner 0:0, every file's mode 0400).
//
// Names must be 1 to 64 characters from ASCII letters, digits, '-', '_' and
// '.', not "." or "..", not end in '.', not be a Windows device name (con,
// nul, com1, ...), and be distinct ignoring case (the files are staged in a
// directory on the host, whose file system may fold case). The files may
// hold 64 MiB in all, and there may be at most 64 of them, and at least one.
//
// The files are staged, for the duration of the call, in a new directory
// only the caller's user can read (see the package documentation).
func NoCloud(files []File) ([]byte, error) { return noCloud(files, nil) }

// noCloud is NoCloud; staged, if not nil (tests), is called with the
// workspace once the files are in it, and its error fails the call.
func noCloud(files []File, staged func(dir string) error) ([]byte, error) {
	sorted, err := check(files)
	if err != nil {
		return nil, err
	}
	img, err := build(sorted, staged)
	if err != nil {
		return nil, err
	}
	if img, err = normalize(img); err != nil {
		return nil, fmt.Errorf("iso: normalizing the image: %w", err)
	}
	return img, nil
}

// check validates files and returns them sorted by name.
func check(files []File) ([]File, error) {
	switch {
	case len(files) == 0:
		return nil, errors.New("iso: no files")
	case len(files) > maxFiles:
		return nil, fmt.Errorf("iso: %d files, more than %d", len(files), maxFiles)
	}
	total := 0
	seen := make(map[string]string, len(files))
	for _, f := range files {
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		folded := strings.ToLower(f.Name)
		if prev, ok := seen[folded]; ok {
			if prev == f.Name {
				return nil, fmt.Errorf("iso: file name %q given twice", f.Name)
			}
			return nil, fmt.Errorf("iso: file names %q and %q differ only in case", prev, f.Name)
		}
		seen[folded] = f.Name
		total += len(f.Data)
		if total > maxTotalSize {
			return nil, fmt.Errorf("iso: files hold more than %d bytes", maxTotalSize)
		}
	}
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return sorted, nil
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("iso: empty file name")
	case len(name) > maxNameLen:
		return fmt.Errorf("iso: file name %q is longer than %d characters", name, maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("iso: file name %q is not a file's", name)
	case strings.HasSuffix(name, "."):
		return fmt.Errorf("iso: file name %q ends in '.'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("iso: file name %q has %q: only ASCII letters, digits, '-', '_' and '.' are allowed", name, c)
		}
	}
	// Windows opens these names, whatever their extension, as devices.
	base, _, _ := strings.Cut(strings.ToLower(name), ".")
	switch base {
	case "con", "prn", "aux", "nul",
		"com0", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9",
		"lpt0", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9":
		return fmt.Errorf("iso: file name %q is a Windows device name", name)
	}
	return nil
}

// build stages files in a private workspace and has go-diskfs lay out the
// image from it, in memory. The workspace is gone when build returns.
func build(files []File, staged func(dir string) error) (img []byte, err error) {
	dir, err := os.MkdirTemp("", "kubestrap-cidata-")
	if err != nil {
		return nil, fmt.Errorf("iso: creating the staging directory: %w", err)
	}
	defer func() {
		// Finalize removes the workspace itself when it succeeds; this is
		// for every other path. Secrets must not be left behind silently.
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			img, err = nil, fmt.Errorf("iso: removing the staging directory %s: %w", dir, rerr)
		}
	}()
	// MkdirTemp asks for 0700 less the umask: make it exactly 0700.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("iso: staging directory: %w", err)
	}
	for _, f := range files {
		if err := stage(filepath.Join(dir, f.Name), f.Data); err != nil {
			return nil, fmt.Errorf("iso: staging %s: %w", f.Name, err)
		}
	}
	if staged != nil {
		if err := staged(dir); err != nil {
			return nil, err
		}
	}

	var m memStorage
	fsys, err := iso9660.Create(&m, 0, 0, sectorSize, dir)
	if err != nil {
		return nil, fmt.Errorf("iso: %w", err)
	}
	err = fsys.Finalize(iso9660.FinalizeOptions{
		RockRidge:        true,
		Joliet:           true,
		VolumeIdentifier: Label,
	})
	if err != nil {
		return nil, fmt.Errorf("iso: laying out the image: %w", err)
	}
	return m.b, nil
}

// stage writes one file, readable and writable by its owner only. O_EXCL:
// the directory is new, so anything already there is an error.
func stage(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// memStorage is the backend.Storage go-diskfs writes the image to: a byte
// slice that grows as it is written.
//
// A write of nothing but zeros only grows the slice: it never replaces bytes
// already written. Finalize (v1.9.4) pads each file with zeros to the end of
// its last sector, but when a file is empty or ends on a sector boundary it
// writes a whole sector of zeros past the file's extent instead. Files are
// written last, in layout order, so for every file but the last that sector
// is the next file's and is written over again; for the last file, it is the
// first sector after the file data: the Joliet root directory, already
// written, which the padding would wipe (an empty vendor-data does it).
// Nothing else Finalize writes over bytes it wrote before, so in a fresh
// image a zero write can only be that overrun, or a no-op.
type memStorage struct {
	b   []byte
	off int64
}

var _ backend.Storage = (*memStorage)(nil)
var _ backend.WritableFile = (*memStorage)(nil)

func (m *memStorage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fs.ErrInvalid
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memStorage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fs.ErrInvalid
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		n := len(m.b)
		m.b = slices.Grow(m.b, int(end)-n)[:end]
		clear(m.b[n:])
	}
	if !slices.ContainsFunc(p, func(c byte) bool { return c != 0 }) {
		return len(p), nil // see memStorage
	}
	return copy(m.b[off:], p), nil
}

func (m *memStorage) Read(p []byte) (int, error) {
	n, err := m.ReadAt(p, m.off)
	m.off += int64(n)
	return n, err
}

func (m *memStorage) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += m.off
	case io.SeekEnd:
		offset += int64(len(m.b))
	default:
		return 0, fs.ErrInvalid
	}
	if offset < 0 {
		return 0, fs.ErrInvalid
	}
	m.off = offset
	return offset, nil
}

func (m *memStorage) Stat() (fs.FileInfo, error)              { return memInfo(len(m.b)), nil }
func (m *memStorage) Close() error                            { return nil }
func (m *memStorage) Sys() (*os.File, error)                  { return nil, backend.ErrNotSuitable }
func (m *memStorage) Writable() (backend.WritableFile, error) { return m, nil }
func (m *memStorage) Path() string                            { return "" }

type memInfo int64

func (i memInfo) Name() string       { return "cidata.iso" }
func (i memInfo) Size() int64        { return int64(i) }
func (i memInfo) Mode() fs.FileMode  { return 0o400 }
func (i memInfo) ModTime() time.Time { return epoch }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// normalize rewrites, in an image go-diskfs laid out, every field that
// records when or by whom it was built: the volume descriptors' dates, the
// directory records' dates, and the Rock Ridge PX (mode, links, owner) and
// TF (dates) entries, following CE continuations. It also pads the volume
// descriptors' text fields with spaces, not NULs, and trims or pads the
// image to the volume size the primary volume descriptor records (go-diskfs
// stops writing at the last byte of the last structure it writes, which
// may be short of it). It walks
// the root directory of each volume descriptor's tree (the image is flat;
// a subdirectory is an error).
func normalize(img []byte) ([]byte, error) {
	var volumeSectors int64 = -1
	for s := int64(16); ; s++ {
		vd, err := span(img, s*sectorSize, sectorSize)
		if err != nil {
			return nil, fmt.Errorf("volume descriptor %d: %w", s, err)
		}
		if string(vd[1:6]) != "CD001" {
			return nil, fmt.Errorf("sector %d is not a volume descriptor", s)
		}
		kind := vd[0]
		if kind == 255 { // terminator
			break
		}
		if kind != 1 && kind != 2 { // primary, supplementary (Joliet)
			return nil, fmt.Errorf("unexpected volume descriptor type %d", kind)
		}
		if kind == 1 {
			volumeSectors = int64(binary.LittleEndian.Uint32(vd[80:84]))
		}
		padIdentifiers(vd, kind == 2)
		putLongDate(vd[813:830]) // creation
		putLongDate(vd[830:847]) // modification
		putUnspecified(vd[847:864])
		putUnspecified(vd[864:881])
		root := vd[156:190]
		putShortDate(root[18:25])
		loc := int64(binary.LittleEndian.Uint32(root[2:6]))
		size := int64(binary.LittleEndian.Uint32(root[10:14]))
		// Rock Ridge entries are in the primary tree only.
		if err := normalizeDir(img, loc, size, kind == 1); err != nil {
			return nil, err
		}
	}
	if volumeSectors < 0 {
		return nil, errors.New("no primary volume descriptor")
	}
	want := volumeSectors * sectorSize
	switch have := int64(len(img)); {
	case have > want:
		// Finalize pads the last file with a whole block of zeros when its
		// size is a multiple of a block (or zero).
		for _, c := range img[want:] {
			if c != 0 {
				return nil, fmt.Errorf("data past the volume's end (%d bytes)", want)
			}
		}
		img = img[:want]
	case have < want:
		img = append(img, make([]byte, want-have)...)
	}
	return img, nil
}

func normalizeDir(img []byte, loc, size int64, susp bool) error {
	ext, err := span(img, loc*sectorSize, size)
	if err != nil {
		return fmt.Errorf("directory at sector %d: %w", loc, err)
	}
	for off := 0; off < len(ext); {
		n := int(ext[off])
		if n == 0 { // records do not cross sectors: skip to the next one
			off = (off/sectorSize + 1) * sectorSize
			continue
		}
		if n < 34 || off+n > len(ext) {
			return fmt.Errorf("directory at sector %d: bad record at %d", loc, off)
		}
		rec := ext[off : off+n]
		off += n
		putShortDate(rec[18:25])
		isDir := rec[25]&0x02 != 0
		nameLen := int(rec[32])
		if 33+nameLen > n {
			return fmt.Errorf("directory at sector %d: bad name length", loc)
		}
		self := nameLen == 1 && (rec[33] == 0 || rec[33] == 1)
		if isDir && !self {
			return fmt.Errorf("directory at sector %d: unexpected subdirectory %q", loc, rec[33:33+nameLen])
		}
		if !susp {
			continue
		}
		su := 33 + nameLen
		if nameLen%2 == 0 {
			su++ // padding byte
		}
		if su > n {
			return fmt.Errorf("directory at sector %d: bad record at %d", loc, off-n)
		}
		if err := normalizeSUSP(img, rec[su:], isDir, 0); err != nil {
			return err
		}
	}
	return nil
}

// normalizeSUSP rewrites the PX and TF entries in a System Use area, and in
// the continuation areas it points to.
func normalizeSUSP(img, area []byte, isDir bool, depth int) error {
	if depth > 8 {
		return errors.New("too many System Use continuation areas")
	}
	for len(area) >= 4 {
		sig, n := string(area[0:2]), int(area[2])
		if n < 4 || n > len(area) {
			return fmt.Errorf("bad System Use entry %q", sig)
		}
		e := area[:n]
		area = area[n:]
		switch sig {
		case "PX": // mode, links, uid, gid [, serial]: each both-endian
			if n != 36 && n != 44 {
				return fmt.Errorf("bad PX entry length %d", n)
			}
			mode, links := uint32(fileMode), uint32(1)
			if isDir {
				mode, links = dirMode, 2 // the image has no subdirectories
			}
			putBoth32(e[4:12], mode)
			putBoth32(e[12:20], links)
			putBoth32(e[20:28], 0)
			putBoth32(e[28:36], 0)
		case "TF":
			if n < 5 {
				return errors.New("bad TF entry")
			}
			flags := e[4]
			width := 7
			if flags&0x80 != 0 {
				width = 17
			}
			count := bits.OnesCount8(flags & 0x7f)
			if 5+count*width != n {
				return fmt.Errorf("bad TF entry length %d for flags %#x", n, flags)
			}
			for i := range count {
				stamp := e[5+i*width : 5+(i+1)*width]
				if width == 7 {
					putShortDate(stamp)
				} else {
					putLongDate(stamp)
				}
			}
		case "CE":
			if n != 28 {
				return fmt.Errorf("bad CE entry length %d", n)
			}
			block := int64(binary.LittleEndian.Uint32(e[4:8]))
			offset := int64(binary.LittleEndian.Uint32(e[12:16]))
			length := int64(binary.LittleEndian.Uint32(e[20:24]))
			cont, err := span(img, block*sectorSize+offset, length)
			if err != nil {
				return fmt.Errorf("continuation area: %w", err)
			}
			if err := normalizeSUSP(img, cont, isDir, depth+1); err != nil {
				return err
			}
		case "ST":
			return nil
		}
	}
	return nil
}

// identifierFields are the volume descriptor's text fields (ECMA-119
// 8.4): system, volume, volume set, publisher, preparer and application
// identifiers, copyright, abstract and bibliographic file identifiers.
// An array value: nothing can change the table.
const identifierCount = 9

func identifierFields() [identifierCount][2]int {
	return [identifierCount][2]int{{8, 40}, {40, 72}, {190, 318}, {318, 446}, {446, 574}, {574, 702}, {702, 739}, {739, 776}, {776, 813}}
}

// padIdentifiers pads the text fields with spaces, as ECMA-119 (and Joliet,
// in UCS-2) has them; go-diskfs pads them with NULs.
func padIdentifiers(vd []byte, ucs2 bool) {
	for _, f := range identifierFields() {
		field := vd[f[0]:f[1]]
		end := len(field)
		for end > 0 && field[end-1] == 0 {
			end--
		}
		if ucs2 {
			end += end % 2 // a character's second byte may be 0
			for i := end; i+1 < len(field); i += 2 {
				field[i], field[i+1] = 0, ' '
			}
			continue
		}
		for i := end; i < len(field); i++ {
			field[i] = ' '
		}
	}
}

// span returns img[off:off+n], or an error if that is outside img.
func span(img []byte, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > int64(len(img)) || n > int64(len(img))-off {
		return nil, fmt.Errorf("%d bytes at %d are outside the image (%d bytes)", n, off, len(img))
	}
	return img[off : off+n], nil
}

// putShortDate writes epoch as a 7-byte directory record date (ECMA-119
// 9.1.5): years since 1900, month, day, hour, minute, second, GMT offset.
func putShortDate(b []byte) {
	copy(b, []byte{byte(epoch.Year() - 1900), byte(epoch.Month()), byte(epoch.Day()), 0, 0, 0, 0})
}

// putLongDate writes epoch as a 17-byte volume descriptor date (ECMA-119
// 8.4.26.1): "YYYYMMDDHHMMSScc" and a GMT offset.
func putLongDate(b []byte) {
	copy(b, epoch.Format("20060102150405")+"00\x00")
}

// putUnspecified writes the 17-byte "not specified" date: sixteen '0'
// digits and a zero offset.
func putUnspecified(b []byte) {
	copy(b, "0000000000000000\x00")
}

// putBoth32 writes v in ECMA-119's both-byte-order form (7.3.3).
func putBoth32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b[0:4], v)
	binary.BigEndian.PutUint32(b[4:8], v)
}
