"""pd-observer."""
