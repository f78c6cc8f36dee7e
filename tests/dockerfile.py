"""Read the Dockerfile into stages and instructions, so tests check it rather than trust it."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    """One instruction: upper-case op, its flags (`--from=build`) and its arguments."""

    op: str
    flags: dict[str, str]
    args: list[str]
    raw: str


@dataclass
class Stage:
    """One `FROM` and what follows it."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def ops(self, op: str) -> list[Instruction]:
        return [i for i in self.instructions if i.op == op]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue  # comments may sit inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _parse(line: str) -> Instruction:
    op, _, rest = line.partition(" ")
    rest = rest.strip()
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        rest = rest.strip()
    if rest.startswith("["):
        args = json.loads(rest)
    elif op.upper() in {"RUN", "ENV", "LABEL"}:
        args = [rest]
    else:
        args = shlex.split(rest)
    return Instruction(op.upper(), flags, args, line)


def parse(path: Path = DOCKERFILE) -> list[Stage]:
    """Return the stages of a Dockerfile, in order."""
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        instruction = _parse(line)
        if instruction.op == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", " ".join(instruction.args), re.I)
            if not match:
                raise ValueError(f"cannot read {line!r}")
            stages.append(Stage(base=match.group(1), name=match.group(2)))
        elif not stages:
            if instruction.op != "ARG":
                raise ValueError(f"{line!r} before the first FROM")
        else:
            stages[-1].instructions.append(instruction)
    return stages


def resolve_base(stages: list[Stage], name: str) -> str:
    """The image a named stage is ultimately built FROM, through the stages it builds on."""
    named = {s.name: s for s in stages if s.name}
    base = named[name].base
    while base in named:
        base = named[base].base
    return base
