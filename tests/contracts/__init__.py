"""Contract checks (issue 16): network flows, permissions and limits, on every synthesized stack."""
