"""The run directory (placeholder: the layout module comes next)."""
