"""Plumbing every layer uses: errors, atomic files, locks, progress."""
