package output

// StagingName is the staging directory's name in the target's parent.
func (s *Stage) StagingName() string { return s.staging }

// RenameAside makes Commit move an old target aside and rename the new one
// in, as on systems without renameat2(RENAME_EXCHANGE), instead of
// exchanging them.
func (s *Stage) RenameAside() { s.renameAside = true }
