"""The networks and their weights files (no training code)."""
