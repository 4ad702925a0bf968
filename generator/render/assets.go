package render

import "io/fs"

// Assets is everything one node's first-boot document must lay down. Both
// encoders (Ignition and cloud-init) consume it, so the two documents create
// the same files with the same modes.
type Assets struct {
	// Node is the node's name; encoders use it for the hostname in meta-data.
	Node string
	// Dirs are created first, owned by root, in order.
	Dirs []Dir
	// Files are written owned by root:root with Mode.
	Files []File
	// Units are systemd units written to /etc/systemd/system/<Name> (mode
	// 0644, root:root), then enabled and started.
	Units []Unit
	// Fetches are files the node downloads at first boot, each verified by
	// its hash before anything uses it: Ignition fetches them itself, the
	// cloud-init document with a oneshot unit required by RequiredBy.
	Fetches []Fetch
	// Restart are units whose configuration Files change: a document that
	// writes the files after boot (cloud-init) restarts them if running.
	Restart []string
	// SSHAuthorizedKeys go to SSHUser (Ignition) or cloud-init's default
	// user.
	SSHAuthorizedKeys []string
	SSHUser           string
	// Network is the node's static network, nil for DHCP: each encoder
	// writes it in its OS's form.
	Network *Network
}

// Fetch is a file downloaded at first boot.
type Fetch struct {
	Path string
	Mode fs.FileMode
	URL  string
	// Hash is "sha256-<hex>" or "sha512-<hex>", as Ignition writes it.
	Hash string
	// Link, if set, is a symlink to Path made once Path is in place.
	Link string
	// Sysext marks a system extension image: systemd-sysext merges it.
	Sysext bool
	// RequiredBy is the unit that must not start without the file.
	RequiredBy string
}

// Network is a static network for one interface, picked by MAC or name.
type Network struct {
	MAC, Interface string
	Addresses      []string // CIDR
	Gateway        string
	DNS            []string
}

// Dir is a directory to create.
type Dir struct {
	Path string
	Mode fs.FileMode
}

// File is a regular file to write.
type File struct {
	Path     string
	Mode     fs.FileMode
	Contents []byte
	// Secret marks a file that holds a credential (the bootstrap token).
	Secret bool
}

// Unit is a systemd unit to install, enable and start.
type Unit struct {
	Name     string
	Contents []byte
}

// UnitDir is where both documents install Units.
const UnitDir = "/etc/systemd/system"

// UnitMode is the mode of installed units.
const UnitMode fs.FileMode = 0o644
