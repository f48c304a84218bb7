"""The functions' tests. Importing them puts functions/ on the import path first, as Lambda puts a function
package's root (its handler.py beside readings/) and the worker's image its working directory: the tests,
and what imports their helpers, import `readings`, `stream_worker` and the handlers from there."""

import sys
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))
