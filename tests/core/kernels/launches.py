"""decoptim's Triton kernels compiled for a GPU on a machine without one.

The interpreter checks (interpreted_checks.py) test what the kernels compute, but Triton's
interpreter runs their bodies as Python and so accepts code that the compiler refuses (a
type that changes in a loop, a value that must be a constexpr). This module closes that gap
in two steps:

1. `record(path)`, in the interpreter process: every launch of a decoptim kernel is noted
   (the kernel, each argument's type and specialisation as Triton's JIT would see them, the
   constexpr values, the launch options) and written to `path` as JSON at exit.
2. `python -m tests.core.kernels.launches PATH [PATH ...] [--ptx DIR]` (without
   TRITON_INTERPRET; several PATHs when the checks ran in several processes):
   each distinct launch is compiled ahead of time for Hopper (sm_90, the H100/H200 the
   kernels are tuned for) down to a cubin, with the ptxas that ships in Triton's wheel; no
   GPU or driver is needed. It prints one line per kernel and exits 1 if any launch fails to
   compile or any kernel of decoptim.core.kernels was never launched. With `--ptx DIR` it
   also writes each launch's PTX without its debug lines: `diff -r` of two such folders,
   before and after a refactor of the kernels, says whether the GPU would run other code.

A compile is not a run: register pressure, a wrong launch grid or a race still need the
CUDA tests (tests/core/test_cuda.py) on a GPU.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import torch

PACKAGE = "decoptim.core.kernels"
TARGET = ("cuda", 90, 32)  # backend, compute capability, warp size: Hopper
OPTIONS = ("num_warps", "num_stages", "num_ctas")  # launch options that change the code


def record(path: str | Path) -> None:
    """Note every launch of a decoptim kernel from now on; write them to `path` at exit."""
    from triton.runtime.interpreter import InterpretedFunction

    launches: dict[str, dict] = {}
    launch = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        fn = self.fn
        if fn.__module__.startswith(PACKAGE + "."):
            values = dict(zip(self.arg_names, args, strict=False))
            values |= {k: v for k, v in kwargs.items() if k in self.arg_names}
            note = {
                "module": fn.__module__,
                "kernel": fn.__name__,
                "args": {name: _describe(value) for name, value in values.items()},
                "options": {k: kwargs[k] for k in OPTIONS if k in kwargs},
            }
            launches.setdefault(json.dumps(note, sort_keys=True), note)
        return launch(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run
    atexit.register(lambda: Path(path).write_text(json.dumps(list(launches.values()), indent=1)))


def _describe(value) -> dict:
    """An argument as the JIT sees it at a launch: its type and its specialisation (an int
    1 becomes a constexpr, a pointer or int divisible by 16 is marked so: Triton compiles
    those as other variants), and its value where that is part of the code (the
    interpreter passes constexprs as plain Python values)."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl

    if not (value is None or isinstance(value, (torch.Tensor, bool, int, float, str))):
        raise TypeError(f"a kernel argument of type {type(value).__name__} is not described")
    kind, key = native_specialize_impl(BaseBackend, value, False, True, True)
    described = {"type": kind, "specialization": key or ""}
    if not isinstance(value, torch.Tensor):
        described["value"] = value
    return described


def kernels() -> dict[tuple[str, str], object]:
    """Every kernel of decoptim.core.kernels: a jit function that its module launches
    (`name[grid](...)`), by (module, name)."""
    from triton.runtime.jit import JITFunction

    found = {}
    package = importlib.import_module(PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        source = Path(module.__file__).read_text()
        for name, value in vars(module).items():
            ours = isinstance(value, JITFunction) and value.__module__ == module.__name__
            if ours and f"{name}[" in source:
                found[(module.__name__, name)] = value
    return found


def signature_of(kernel, note: dict) -> tuple[dict, dict, dict]:
    """The compiler's signature, constexpr values and attributes for one noted launch of
    `kernel` (a JITFunction): the values of constexprs, the types of the other arguments,
    and their divisibility as the JIT specialises it."""
    from triton.backends.compiler import BaseBackend

    signature, constants, attrs = {}, {}, {}
    for index, param in enumerate(kernel.params):
        described = note["args"].get(param.name)
        if described is None:  # not passed: its default
            if not param.has_default:
                raise ValueError(f"{note['kernel']}: no value for {param.name}")
            signature[param.name] = "constexpr"
            constants[param.name] = param.default
        elif param.is_constexpr or described["type"] == "constexpr":
            signature[param.name] = "constexpr"
            constants[param.name] = described.get("value")
        else:
            signature[param.name] = described["type"]
            if described["specialization"]:
                attrs[(index,)] = BaseBackend.parse_attr(described["specialization"])
    return signature, constants, attrs


def compile_for_target(
    kernel, signature: dict, constants: dict, options: dict, attrs: dict | None = None
):
    """`kernel` compiled for TARGET down to a cubin (the compiler's error if it cannot be)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(kernel, signature, constexprs=constants, attrs=attrs)
    binary = triton.compile(source, target=GPUTarget(*TARGET), options=options)
    assert binary.asm.get("cubin"), f"{kernel.__name__}: no cubin"
    return binary


def code_of(ptx: str) -> str:
    """PTX without what moves when only the source's layout does (line and file records)."""
    kept = []
    for line in ptx.splitlines():
        if line.lstrip().startswith((".loc", ".file", "//", "$L__tmp")):
            continue  # $L__tmp labels mark source lines for the debug sections
        if line.split()[:1] == [".section"] and ".debug" in line:
            break  # the DWARF sections run to the end
        kept.append(line)
    return "\n".join(kept) + "\n"


def main(paths: list[str], ptx_dir: str | None = None) -> int:
    every = kernels()
    distinct: dict[str, tuple] = {}  # launches that differ only in runtime values compile once
    failures = []
    for note in (note for path in paths for note in json.loads(Path(path).read_text())):
        key = (note["module"], note["kernel"])
        if key not in every:
            failures.append(f"{key[0]}.{key[1]}: launched but not a kernel of {PACKAGE}")
            continue
        signature, constants, attrs = signature_of(every[key], note)
        shown_attrs = {str(k): v for k, v in attrs.items()}
        # The interpreter never launches dependently (`launch.dependent_launch`): a kernel
        # that can is compiled both ways.
        variants = [constants]
        if constants.get("DEPENDENT") is False:
            variants.append({**constants, "DEPENDENT": True})
        for variant in variants:
            identity = json.dumps([key, signature, variant, shown_attrs, note["options"]])
            distinct[identity] = (key, signature, variant, attrs, note["options"])
    compiled = {key: 0 for key in every}
    started = time.monotonic()
    for identity, (key, signature, constants, attrs, options) in distinct.items():
        try:
            binary = compile_for_target(every[key], signature, constants, options, attrs)
            compiled[key] += 1
            if ptx_dir:
                name = hashlib.sha256(identity.encode()).hexdigest()
                out = Path(ptx_dir) / f"{key[1]}-{name[:12]}.ptx"
                out.write_text(code_of(binary.asm["ptx"]))
        except Exception as error:  # the compiler's own message says what is wrong
            failures.append(f"{key[0]}.{key[1]} {constants}: {type(error).__name__}: {error}")
    for (module, name), count in sorted(compiled.items()):
        print(f"{'ok' if count else 'NEVER LAUNCHED'} {module}.{name}: {count} variant(s)")
        if not count:
            failures.append(f"{module}.{name}: never launched by the interpreter checks")
    print(
        f"{sum(compiled.values())} of {len(distinct)} distinct launches compiled for "
        f"sm_{TARGET[1]} in {time.monotonic() - started:.0f} s"
    )
    for failure in failures:
        print(f"FAILED {failure}"[:4000])
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("launches", nargs="+", help="the JSON files that record() wrote")
    parser.add_argument("--ptx", help="a folder for each launch's PTX (created)")
    args = parser.parse_args()
    if args.ptx:
        Path(args.ptx).mkdir(parents=True, exist_ok=True)
    sys.exit(main(args.launches, args.ptx))
