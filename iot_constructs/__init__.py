"""Reusable constructs of the IoT platform: thin, typed layers over the generated AWS provider bindings.

Not named `constructs`: that would shadow the `constructs` library that cdktf itself imports.
"""
