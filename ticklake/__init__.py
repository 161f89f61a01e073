"""ticklake."""
