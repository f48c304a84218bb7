"""`python -m fast_synth build`: the set-up step of fast synth (see fast_synth).

Generates the lazy provider view if it is missing or stale, then warms the jsii package cache for both
the stock and the lazy tarball. Fast when both are up to date.
"""

import argparse
import os
import sys
import time

from fast_synth import VIEW_DIR
from fast_synth.build import build, read_stock_package, view_tarball
from fast_synth.cache import warm

# Node 20 works with jsii; its end-of-life banner would drown what this step prints.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

parser = argparse.ArgumentParser(prog="python -m fast_synth", description=__doc__)
parser.add_argument("command", choices=["build"])
parser.parse_args()

start = time.perf_counter()
try:
    stock = read_stock_package()
    state = "built" if build(stock) else "up to date"
except Exception as error:
    # Fast synth is an optimisation: the stock bindings synthesize the same stacks, only slower.
    print(
        f"warning: fast synth is off, the lazy provider view could not be built: {error!r}", file=sys.stderr
    )
    sys.exit(0)
print(f"lazy provider view {state} in {VIEW_DIR} ({time.perf_counter() - start:.1f} s)")

start = time.perf_counter()
warmed = warm(stock.manifest.assembly, stock.manifest.assembly_version, [stock.tarball, view_tarball(stock)])
loaded = ", ".join(str(tarball) for tarball in warmed) or "nothing to load"
print(f"jsii package cache warm: {loaded} ({time.perf_counter() - start:.1f} s)")
