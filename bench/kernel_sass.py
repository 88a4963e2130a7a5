"""The sm_90 SASS of top-p's profile pass as the coordinated step launches it at B ≥ 64
(512-token blocks loaded in the sums' layout, 8 thresholds, 4 warps, aligned pointers),
compiled on a CPU with the ptxas in Triton's wheel: the instructions of its main loop by
opcode, and its registers (docs/performance.md, "Stop 45": 144 at 72a9e26, 116 since).

    python bench/kernel_sass.py                   # this tree's kernel
    PYTHONPATH=OLD/src python bench/kernel_sass.py  # an archived tree's (git archive REV src)
"""

import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import triton
from triton.backends.compiler import BaseBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/
from decoptim.core.kernels import top_p
from tests.core.kernels.launches import compile_for_target

TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
POINTERS = ["z_ptr", "inv_tau_ptr", "p_ptr", "max_ptr", "sum_ptr", "centre_ptr", "tokens_ptr",
            "bracket_ptr", "profile_ptr"]  # fmt: skip


def cuobjdump(flag: str, cubin: str) -> str:
    return subprocess.run([str(TOOLS / "cuobjdump"), flag, cubin], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def main() -> None:
    kernel = top_p._top_p_profile_kernel
    constants = dict(LEVEL=1, KEY=0, PENDING=False, PROFILE=8, SPLIT_BLOCK=16, BLOCK=512,
                     LOAD_2D=True)  # fmt: skip
    types = dict.fromkeys(POINTERS, "*fp32") | dict(STAT_SPLITS="i32", V="i32", CHUNK="i32")
    names = [param.name for param in kernel.params]
    signature = {name: "constexpr" if name in constants else types[name] for name in names}
    aligned = {(names.index(name),): BaseBackend.parse_attr("D")
               for name in [*POINTERS, "V", "CHUNK"]}  # fmt: skip
    binary = compile_for_target(kernel, signature, constants, {"num_warps": 4}, aligned)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as file:
        file.write(binary.asm["cubin"])
    lines = re.findall(r"/\*([0-9a-f]{4})\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)([^;]*);",
                       cuobjdump("-sass", file.name))  # fmt: skip
    # The main loop: from the target of the last backward branch to that branch.
    address = [int(at, 16) for at, _, _ in lines]
    loops = [(int(m.group(1), 16), address[i]) for i, (_, op, rest) in enumerate(lines)
             if op.startswith("BRA") and (m := re.search(r"0x([0-9a-f]+)", rest))
             and int(m.group(1), 16) < address[i]]  # fmt: skip
    start, end = max(loops, key=lambda loop: loop[1] - loop[0])
    ops = Counter(op.split(".")[0] for at, (_, op, _) in zip(address, lines, strict=True)
                  if start <= at <= end)  # fmt: skip
    print(f"{top_p.__file__}: main loop {sum(ops.values())} instructions per iteration "
          f"(4 tokens a thread); {dict(ops.most_common())}")  # fmt: skip
    print(" ".join(re.findall(r"REG:\d+|SHARED:\d+", cuobjdump("-res-usage", file.name))))


if __name__ == "__main__":
    main()
