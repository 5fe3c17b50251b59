"""semievol: semi-supervised fine-tuning of LLMs (SemiEvol, arXiv 2410.14745).

The Python API mirrors the CLI::

    from semievol import load_config, build_backend, build_task, load_split, evaluate
"""

from semievol.backends import Backend, ModelConfig, build_backend
from semievol.config import Config, load_config
from semievol.data import DataConfig, Example, load_split, load_splits
from semievol.evaluation import EvalConfig, evaluate
from semievol.tasks import TaskConfig, build_task
from semievol.training import TrainConfig, sft_examples

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Config",
    "DataConfig",
    "EvalConfig",
    "Example",
    "ModelConfig",
    "TaskConfig",
    "TrainConfig",
    "build_backend",
    "build_task",
    "evaluate",
    "load_config",
    "load_split",
    "load_splits",
    "sft_examples",
]
