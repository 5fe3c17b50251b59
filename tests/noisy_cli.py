"""``semievol`` with noisy dependencies: ``python tests/noisy_cli.py ARGS`` runs ``semievol ARGS``
after making the libraries it calls warn the way upstream releases do — a ``FutureWarning`` and
a ``UserWarning``, a transformers ``warning_once`` (transformers prints those through its own
stderr handler), and a PEFT and a torch log record — whenever a config is read or a model is put
into train or eval mode. ``NOISY_FULL_DISK=1`` also makes every file replacement fail as on a
full disk. Tests run it to check that semievol's one-line messages stay one line.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from typing import Any

NOISE = "noisy dependency"  # in every line the noise prints, so tests can count it


def make_noise() -> None:
    from transformers.utils import logging as hf_logging

    warnings.warn(f"`old_arg` is deprecated ({NOISE}); use `new_arg`", FutureWarning, stacklevel=2)
    warnings.warn(f"a user warning ({NOISE})", UserWarning, stacklevel=2)
    hf_logging.get_logger("transformers.modeling_utils").warning(f"transformers says ({NOISE})")
    logging.getLogger("peft.tuners").warning(f"peft says ({NOISE})")
    logging.getLogger("torch.nn").warning(f"torch says ({NOISE})")


def noisy(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        make_noise()
        return fn(*args, **kwargs)

    return wrapper


def main() -> int:
    import torch
    import yaml

    yaml.safe_load = noisy(yaml.safe_load)
    torch.nn.Module.train = noisy(torch.nn.Module.train)
    if os.environ.get("NOISY_FULL_DISK") == "1":

        def full_disk(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            make_noise()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

        os.replace = full_disk
    from semievol.cli import main as semievol_main

    return semievol_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
