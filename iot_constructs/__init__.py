"""Reusable constructs of the IoT platform: thin, typed layers over the generated AWS provider bindings.

Not named `constructs`: that would shadow the `constructs` library that cdktf itself imports.

Importing this package turns fast synth on (fast_synth) before any module here imports the provider
bindings, so that every entry point (main.py, the tests, tools, bench) shares the one switch;
`IOT_FAST_SYNTH=0` turns it off, and an unusable view falls back to the stock bindings with a warning.
"""

import fast_synth

fast_synth.enable()
