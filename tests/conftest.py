import torch


def random_logits(rows: int, vocab: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=generator) * scale


def shared_data(name: str):
    """Path of a file in ../shared/data (or $DECOPTIM_DATA): CI must have it, others skip."""
    import os
    from pathlib import Path

    import pytest

    root = Path(
        os.environ.get("DECOPTIM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    path = root / name
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"test data {path} is missing (set DECOPTIM_DATA)")
        pytest.skip(f"test data {path} not present")
    return path
