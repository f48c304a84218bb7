"""Project tooling: Terraform settings for this machine, and the fast-synth view of the provider."""
