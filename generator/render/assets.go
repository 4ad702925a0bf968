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
