"""The name transformers gives the KV cache, in a model call's arguments and in its output.

transformers 5.24 renamed ``past_key_values`` to ``cache``; the old name now warns on every use
and is due to go in 5.40. Releases before 5.24 know only the old name (passed the new one,
they would silently ignore it), so the name is read from the installed release once, here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any


@functools.cache
def cache_name() -> str:
    """``cache`` where the installed transformers' model outputs have that field, else the old
    ``past_key_values``."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    names = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    return "cache" if "cache" in names else "past_key_values"


def with_cache(cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand ``cache`` to a model's forward under the installed name."""
    return {cache_name(): cache}


def output_cache(output: Any) -> Any:
    """The KV cache a model call returned (with ``use_cache=True``)."""
    return output[cache_name()]
