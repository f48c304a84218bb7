"""The local environment on the AWS emulator, and plan review for every environment.

`python -m tools.local deploy|destroy|plan` (the Makefile's `deploy`, `destroy` and `plan`); the modules
are also the building blocks of tests/e2e.
"""
