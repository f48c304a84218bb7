"""`python -m tools.lazy_provider build`: the set-up step of fast synth (see tools.lazy_provider).

Generates the lazy provider view if it is missing or stale, then warms the jsii package cache for both
the stock and the lazy tarball. Fast when both are up to date.
"""

import argparse
import os
import time

from tools.lazy_provider import VIEW_DIR
from tools.lazy_provider.build import build, read_stock_package, view_tarball
from tools.lazy_provider.cache import warm

# Node 20 works with jsii; its end-of-life banner would drown what this step prints.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

parser = argparse.ArgumentParser(prog="python -m tools.lazy_provider", description=__doc__)
parser.add_argument("command", choices=["build"])
parser.parse_args()

start = time.perf_counter()
stock = read_stock_package()
state = "built" if build(stock) else "up to date"
print(f"lazy provider view {state} in {VIEW_DIR} ({time.perf_counter() - start:.1f} s)")

start = time.perf_counter()
warmed = warm(stock.manifest.assembly, stock.manifest.assembly_version, [stock.tarball, view_tarball(stock)])
loaded = ", ".join(str(tarball) for tarball in warmed) or "nothing to load"
print(f"jsii package cache warm: {loaded} ({time.perf_counter() - start:.1f} s)")
