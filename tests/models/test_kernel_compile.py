"""The Triton kernels compile for an H100 (sm_90) without a GPU, and their GPU tiles do not spill.

The interpreter (test_kernel_interpreter.py) checks the numbers but accepts programs the real
compiler rejects; this runs Triton's own compiler and ptxas (shipped with triton) ahead of time.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed: the depthwise-conv kernels cannot run")
if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("the kernels are interpreted in this process", allow_module_level=True)
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
if not (BIN / "ptxas").exists():
    pytest.skip(f"no ptxas in {BIN}", allow_module_level=True)

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from video_mcmae.models import dwconv  # noqa: E402

COMMON = {"n_rows": "i32", "C": "i32", "T": "i32", "H": "i32", "W": "i32", "KT": "constexpr",
          "KH": "constexpr", "KW": "constexpr", "VISIBLE": "constexpr", "BLOCK_P": "constexpr",
          "BLOCK_C": "constexpr"}


def _compile(fn, signature, constants, num_warps, tmp_path):
    kernel = triton.compile(ASTSource(fn, signature, constants), target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": num_warps})
    cubin = tmp_path / "kernel.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    usage = subprocess.run([str(BIN / "cuobjdump"), "-res-usage", str(cubin)], capture_output=True,
                           text=True, check=True).stdout
    return int(re.search(r"STACK:(\d+)", usage).group(1))


def test_forward_and_weight_grad_compile_for_sm90_without_spills(tmp_path):
    dw = dwconv.load_kernels()
    shape = {"KT": 3, "KH": 5, "KW": 5, "VISIBLE": True}
    fwd_config = dw._FWD_CONFIGS[0]
    signature = {"x_ptr": "*bf16", "w_ptr": "*fp32", "b_ptr": "*fp32", "y_ptr": "*bf16", "pos_ptr": "*i32",
                 "map_ptr": "*i32", **COMMON, "HAS_BIAS": "constexpr"}
    stack = _compile(dw._dwconv_fwd_kernel, signature, {**shape, "HAS_BIAS": True, **fwd_config.kwargs},
                     fwd_config.num_warps, tmp_path)
    assert stack == 0, f"forward kernel spills ({stack} bytes of stack)"

    block_p, block_c, warps = dw._WGRAD_TILE
    signature = {"x_ptr": "*bf16", "dy_ptr": "*bf16", "part_ptr": "*fp32", "pos_ptr": "*i32", "map_ptr": "*i32",
                 "rows_per_chunk": "i32", **COMMON}
    stack = _compile(dw._dwconv_wgrad_kernel, signature, {**shape, "BLOCK_P": block_p, "BLOCK_C": block_c},
                     warps, tmp_path)
    assert stack == 0, f"weight-gradient kernel spills ({stack} bytes of stack)"
