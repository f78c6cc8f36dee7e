"""The README stays true: its two commands and its configuration reference match the code."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from flows.config import PipelineConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _config_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _config_keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_configuration_reference_lists_every_setting_and_nothing_else() -> None:
    section = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", section, flags=re.MULTILINE))
    assert documented == _config_keys(PipelineConfig)


def test_the_two_commands_come_first() -> None:
    head = README[:1500]
    assert "./dev demo" in head and "./dev test" in head
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "./dev test" in ci  # CI runs exactly the README's test command
