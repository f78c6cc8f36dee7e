"""Workload Identity attribute mappings and conditions, evaluated the way Google STS does.

A Workload Identity provider turns the AWS caller identity (the *assertion*: `arn`, `account`,
`userid`, ...) into attributes with CEL expressions (the *attribute mapping*), then admits or
rejects the exchange with one more CEL expression over those attributes (the *attribute
condition*). See https://cloud.google.com/iam/docs/workload-identity-federation#mapping and
https://cloud.google.com/iam/docs/workload-identity-federation#conditions.

We evaluate both with `cel-python` (import `celpy`) plus Google's `extract()` string function,
which no CEL library ships. The doctor uses this to show why a task is rejected, and the Google
STS stand-in uses it to answer like the real service.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Final

import celpy
from celpy import celtypes

DEFAULT_AWS_MAPPING: Final[Mapping[str, str]] = {
    "google.subject": "assertion.arn",
    "attribute.aws_role": (
        "assertion.arn.contains('assumed-role')"
        " ? assertion.arn.extract('{account_arn}assumed-role/')"
        " + 'assumed-role/'"
        " + assertion.arn.extract('assumed-role/{role_name}/')"
        " : assertion.arn"
    ),
}
"""The mapping Google documents (and the console proposes) for an AWS provider."""

_PLACEHOLDER: Final = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_ACTIVATION_DUMP: Final = re.compile(r"\s*\(in activation .*", re.DOTALL)


def extract(value: str, template: str) -> str:
    """Google's `extract()`: the text that `{name}` matches between the template's literals.

    `extract('arn:aws:sts::1:assumed-role/r/s', 'assumed-role/{role_name}/')` is `'r'`. The text
    before the placeholder must occur in `value`; the text after it ends the match (an empty
    suffix takes the rest of the string). Without a match the result is `''`.

    Args:
        value: The string to search.
        template: Literal text with exactly one `{name}` placeholder.

    Returns:
        The matched text, or `''` when the template's literals do not occur in `value`.

    Raises:
        ValueError: The template does not hold exactly one placeholder.
    """
    placeholders = _PLACEHOLDER.findall(template)
    if len(placeholders) != 1:
        raise ValueError(
            f"extract() template {template!r} must hold exactly one {{name}} placeholder, "
            f"found {len(placeholders)}"
        )
    prefix, suffix = _PLACEHOLDER.split(template)
    start = value.find(prefix)
    if start < 0:
        return ""
    start += len(prefix)
    if not suffix:
        return value[start:]
    end = value.find(suffix, start)
    return value[start:end] if end >= 0 else ""


def _cel_extract(value: celtypes.Value, template: celtypes.Value) -> celtypes.StringType:
    if not isinstance(value, str) or not isinstance(template, str):
        raise TypeError("extract() takes a string and a string template")
    return celtypes.StringType(extract(str(value), str(template)))


_FUNCTIONS: Final = {"extract": _cel_extract}


def _describe(exc: BaseException) -> str:
    """celpy's messages embed the whole activation; keep the first line that says what failed."""
    text = str(exc.args[0]) if exc.args else str(exc)
    return _ACTIVATION_DUMP.sub("", text).strip() or type(exc).__name__


@functools.lru_cache(maxsize=256)
def _program(expression: str) -> celpy.Runner:
    env = celpy.Environment()
    # celpy pre-declares the `google.protobuf.*` types, which would shadow our `google`
    # variable (google.subject, google.groups); provider expressions never name them.
    for name in celpy.googleapis:
        env.annotations.pop(name, None)
    try:
        ast = env.compile(expression)
    except celpy.CELParseError as exc:
        raise ValueError(f"CEL expression {expression!r} does not parse: {exc}") from exc
    return env.program(ast, functions=_FUNCTIONS)


def _evaluate(expression: str, context: Mapping[str, Any]) -> celtypes.Value:
    program = _program(expression)
    activation = {name: celpy.json_to_cel(value) for name, value in context.items()}
    try:
        result = program.evaluate(activation)
    except (celpy.CELEvalError, TypeError, ValueError) as exc:
        raise ValueError(f"CEL expression {expression!r} failed: {_describe(exc)}") from exc
    # celpy sometimes returns the error as a value instead of raising it.
    if isinstance(result, celpy.CELEvalError):
        raise ValueError(f"CEL expression {expression!r} failed: {_describe(result)}")
    return result


def evaluate_mapping(mapping: Mapping[str, str], assertion: Mapping[str, Any]) -> dict[str, str]:
    """Apply an attribute mapping to an assertion.

    Args:
        mapping: Target attribute (`google.subject`, `attribute.aws_role`, ...) to CEL expression.
        assertion: The AWS caller identity: `arn`, `account`, `userid`, ...

    Returns:
        Each target attribute with its value, e.g. `{"google.subject": "arn:aws:sts::..."}`.

    Raises:
        ValueError: An expression does not parse, fails, or does not give a string; the message
            names the attribute and the expression.
    """
    attributes: dict[str, str] = {}
    for key, expression in mapping.items():
        try:
            value = _evaluate(expression, {"assertion": dict(assertion)})
        except ValueError as exc:
            raise ValueError(f"Attribute mapping {key}: {exc}") from exc
        if not isinstance(value, str):
            raise ValueError(
                f"Attribute mapping {key}: CEL expression {expression!r} gave "
                f"{type(value).__name__}, not a string"
            )
        attributes[key] = str(value)
    return attributes


def condition_context(attributes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Split mapped attributes into the `google` and `attribute` variables a condition sees."""
    google = {
        k.removeprefix("google."): v for k, v in attributes.items() if k.startswith("google.")
    }
    custom = {
        k.removeprefix("attribute."): v for k, v in attributes.items() if k.startswith("attribute.")
    }
    return {"google": google, "attribute": custom}


def evaluate_condition(
    condition: str,
    attributes: Mapping[str, str],
    *,
    assertion: Mapping[str, Any] | None = None,
) -> bool:
    """Tell whether an attribute condition admits the mapped attributes.

    Args:
        condition: The provider's CEL attribute condition, e.g.
            `attribute.aws_role == 'arn:aws:sts::1:assumed-role/etl'`.
        attributes: The mapping's result (`evaluate_mapping`), keys with their prefixes.
        assertion: The raw AWS caller identity, for conditions that read `assertion.*`.

    Returns:
        True when the condition admits the credential.

    Raises:
        ValueError: The condition does not parse, fails, or is not boolean; the message names it
            and the CEL error.
    """
    context: dict[str, Any] = condition_context(attributes)
    if assertion is not None:
        context["assertion"] = dict(assertion)
    result = _evaluate(condition, context)
    if not isinstance(result, celtypes.BoolType):
        raise ValueError(
            f"Attribute condition {condition!r} gave {type(result).__name__}, not a boolean"
        )
    return bool(result)
