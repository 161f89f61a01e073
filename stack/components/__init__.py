"""Local stack components: one module per service."""
