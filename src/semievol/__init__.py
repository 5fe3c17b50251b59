"""semievol: semi-supervised fine-tuning of LLMs (SemiEvol, arXiv 2410.14745).

The Python API mirrors the CLI::

    from semievol import load_config, run_pipeline

    result = run_pipeline(load_config("configs/fpb.yaml", {"selection.theta": 0.4}))
"""

from semievol.backends import Backend, ModelConfig, build_backend
from semievol.config import Config, load_config
from semievol.data import DataConfig, Example, load_split, load_splits
from semievol.evaluation import EvalConfig, evaluate
from semievol.pipeline import PipelineConfig, run_pipeline
from semievol.stages.committee import CommitteeConfig
from semievol.stages.in_context import InContextConfig
from semievol.stages.selection import SelectionConfig, select_pseudo_labels
from semievol.tasks import TaskConfig, build_task
from semievol.training import TrainConfig, sft_examples

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CommitteeConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "Example",
    "InContextConfig",
    "ModelConfig",
    "PipelineConfig",
    "SelectionConfig",
    "TaskConfig",
    "TrainConfig",
    "build_backend",
    "build_task",
    "evaluate",
    "load_config",
    "load_split",
    "load_splits",
    "run_pipeline",
    "select_pseudo_labels",
    "sft_examples",
]
