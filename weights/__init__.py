"""Official checkpoints: where they are published (catalog) and a verified, resumable fetch."""
