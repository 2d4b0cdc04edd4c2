"""Protection: consistent backups (create, verify, restore) and retention (gc)."""
