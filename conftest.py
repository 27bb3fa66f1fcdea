"""Test-wide settings: every test and notebook runs on the offline stand-in, in a cache of its own.

Both are environment variables, so the notebooks' kernels (started by nbval) inherit them.
"""
import os
from pathlib import Path

os.environ.setdefault("PHI3_AIPC_MODEL", "stand-in")
os.environ.setdefault("PHI3_AIPC_CACHE", str(Path(__file__).parent / ".cache" / "test"))
