"""Test-wide settings: every test and notebook runs on the offline stand-in, in a cache of its own.

Both are environment variables, so the notebooks' kernels (started by nbval) inherit them.
Jupyter looks for kernels in this environment first, so nbval starts each notebook in the kernel
it declares: "python3" is this environment's, "phi3-aipc-npu" the NPU library's (both
registered by scripts/bootstrap.py), whatever other kernels the machine has.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("PHI3_AIPC_MODEL", "stand-in")
os.environ.setdefault("PHI3_AIPC_CACHE", str(Path(__file__).parent / ".cache" / "test"))
# Without the NPU-library environment (macOS, or PHI3_AIPC_SKIP_NPU=1) its notebook cannot run.
NPU_SKIPPED = bool(os.environ.get("PHI3_AIPC_SKIP_NPU")) or sys.platform == "darwin"
collect_ignore = ["notebooks/01_npu_acceleration_library.ipynb"] if NPU_SKIPPED else []
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    filter(None, [str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")]))
