"""README's short tour runs as written."""

import re
from pathlib import Path

from decoptim.core import specs

README = Path(__file__).parents[1] / "README.md"


def test_the_short_tour_runs(monkeypatch):
    monkeypatch.setattr(specs, "_REGISTRY", dict(specs._REGISTRY))  # the tour registers a name
    text = README.read_text()
    tour = text[text.index("## A short tour") :]
    block = re.search(r"```python\n(.*?)```", tour, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md (A short tour)", "exec"), namespace)
    d = namespace["d"]
    # the registered name builds through specs, as eval, TOML grids and vLLM read it
    decoder = d.parse_spec("tsallis-k:k=50").build(0.8)
    assert (decoder.probs(namespace["logits"]) > 0).sum(-1).le(50).all()
    tokens, codes = namespace["tokens"], namespace["codes"]
    assert tokens.shape == (32,) and codes.value.shape == (32,)
