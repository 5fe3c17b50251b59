"""Progress bars with totals and ETA, all switched off by ``semievol -q``.

tqdm reads its TQDM_DISABLE environment default once, when it is imported, so ``-q`` cannot rely
on it; every bar of semievol is made here and checks the switch when it is created.
"""

from __future__ import annotations

import os
from typing import Any


def quiet() -> bool:
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")


def progress_bar(*, disable: bool = False, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(disable=disable or quiet(), dynamic_ncols=True, **kwargs)
