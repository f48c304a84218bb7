"""The platform stack and its per-environment configuration."""
