"""One source for YAML files, CLI flags and the Python API.

Every section is a flat dataclass that lives next to the code using it, with a docstring under
each field (shown by ``--help``) and checks in ``__post_init__``. ``Config`` groups the sections;
YAML files mirror it (``train: {epochs: 3}``) and CLI flags address fields as ``--train.epochs 3``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from semievol.backends import ModelConfig
from semievol.data import DataConfig
from semievol.errors import ConfigError
from semievol.evaluation import EvalConfig
from semievol.pipeline import PipelineConfig
from semievol.stages.committee import CommitteeConfig
from semievol.stages.in_context import InContextConfig
from semievol.stages.selection import SelectionConfig
from semievol.tasks import TaskConfig
from semievol.training import TrainConfig

# Setting names that hold credentials: refused in configs (which are copied into run dirs).
SECRET_NAME = re.compile(r"(api_?key|token|secret|password|credential)", re.IGNORECASE)


@dataclasses.dataclass
class Config:
    """Everything a semievol command needs; each field is one section of the YAML file."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    in_context: InContextConfig = dataclasses.field(default_factory=InContextConfig)
    committee: CommitteeConfig = dataclasses.field(default_factory=CommitteeConfig)
    selection: SelectionConfig = dataclasses.field(default_factory=SelectionConfig)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields (PEP 257 attribute docstrings)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, str(tp)
    )


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert where it is lossless (int → float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: expected one of {type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # YAML reads `name: 1.5` as a number
    elif tp is Any:
        return value
    raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")


def build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate one section from a mapping, with one clear error per bad key or value."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    secret = next((k for k in values if k not in names and SECRET_NAME.search(k)), None)
    if secret:
        raise ConfigError(
            f"{where}: {secret!r} looks like a secret; semievol reads credentials only from "
            "environment variables (e.g. HF_TOKEN), never from config files"
        )
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting {unknown[0]!r}; known settings: {', '.join(names)}"
        )
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}:{line}: invalid YAML: {getattr(e, 'problem', e)}".replace(": :", ":")
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)})")
    return raw


def parse_cli_value(text: str) -> Any:
    """CLI values are YAML scalars or flow lists: ``3``, ``null``, ``true``, ``[a, b]``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Resolve a config: defaults ← ``base`` ← YAML file ← ``overrides`` ("section.field": value)."""
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for name, values in (base or {}).items():
        raw[name].update(values)
    source = str(path) if path else "config"
    if path is not None:
        for name, values in load_yaml(path).items():
            if name not in SECTIONS:
                raise ConfigError(
                    f"{path}: unknown section {name!r}; known sections: {', '.join(SECTIONS)}"
                )
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {name}: expected a mapping of settings")
            raw[name].update(values)
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"--{key}: unknown option")
        raw[section][name] = value
    sections = {
        name: build_section(cls, raw[name], f"{source}: {name}") for name, cls in SECTIONS.items()
    }
    return Config(**sections)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config beside an artifact."""
    from semievol.io import atomic_write_yaml

    atomic_write_yaml(path, config_to_dict(cfg))
