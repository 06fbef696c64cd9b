"""Makes this folder's helper module (`rle_reference`) importable from its tests."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
