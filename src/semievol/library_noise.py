"""Dependencies' warnings stay out of the user's terminal, set once at the CLI's entry point.

What a user of ``semievol`` reads on stderr is semievol's own: progress, its log lines and, on
failure, one error line. Deprecation notices and log records of the libraries underneath
(transformers, PEFT, accelerate, the Hub client, torch) are addressed to semievol's developers,
who see them in the test suite; ``semievol -v`` shows them too. Library users who import
semievol keep Python's and the libraries' own defaults: nothing here runs on import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# Loggers of libraries semievol calls; their records reach the terminal only with -v.
DEPENDENCY_LOGGERS = (
    "transformers",
    "peft",
    "accelerate",
    "huggingface_hub",
    "datasets",
    "torch",
    "sentence_transformers",
    "filelock",
    "urllib3",
)
# transformers and the Hub client set their loggers' level from these when they are imported,
# over any level set before; a user's own setting wins.
VERBOSITY_VARIABLES = ("TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY", "DATASETS_VERBOSITY")


@contextlib.contextmanager
def dependency_noise_routed(verbose: bool = False) -> Iterator[None]:
    """Within: Python warnings and dependencies' log records below ERROR print nothing, unless
    ``verbose``. Levels, filters and variables are restored on exit (``main`` runs in-process in
    tests and notebooks too)."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in DEPENDENCY_LOGGERS]
    levels = [lg.level for lg in loggers]
    added = [name for name in VERBOSITY_VARIABLES if name not in os.environ]
    with warnings.catch_warnings():
        os.environ.update(dict.fromkeys(added, "error"))
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        # semievol reports its own conditions through its log; a Python warning comes from
        # below. Warning options the user gave Python (-W, PYTHONWARNINGS) are kept.
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            for name in added:
                os.environ.pop(name, None)
