"""Runs test_kernel_triton.py under Triton's CPU interpreter in a fresh process.

Triton fixes compiled-vs-interpreted when `triton.language` is first imported, which in a pytest
process (conftest -> timm) happens before any test module could set TRITON_INTERPRET.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed: the depthwise-conv kernels cannot run")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA test_kernel_triton.py runs the compiled kernels")
def test_kernels_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "models" / "test_kernel_triton.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    assert " passed" in report and "skipped" not in report, report
