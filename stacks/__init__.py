"""The platform stack and its per-environment configuration.

Importing the constructs package first turns fast synth on (see iot_constructs), before any module here
imports cdktf: `import stacks.platform_stack` alone would otherwise start the stock bindings.
"""

import iot_constructs  # noqa: F401
