"""Attribute mappings and conditions, evaluated as Google STS evaluates them."""

from __future__ import annotations

import pytest

from blocks.cel import DEFAULT_AWS_MAPPING, evaluate_condition, evaluate_mapping, extract
from standins import google as fake

ROLE_ARN = "arn:aws:sts::123456789012:assumed-role/access2bq"
SESSION_ARN = f"{ROLE_ARN}/0123abcd"
USER_ARN = "arn:aws:iam::123456789012:user/alice"


def _assertion(arn: str) -> dict[str, str]:
    return {"arn": arn, "account": "123456789012", "userid": "AROAEXAMPLE:0123abcd"}


def test_default_mapping_reduces_session_arn_to_role():
    attributes = evaluate_mapping(DEFAULT_AWS_MAPPING, _assertion(SESSION_ARN))
    assert attributes == {"google.subject": SESSION_ARN, "attribute.aws_role": ROLE_ARN}


def test_default_mapping_keeps_user_arn():
    attributes = evaluate_mapping(DEFAULT_AWS_MAPPING, _assertion(USER_ARN))
    assert attributes == {"google.subject": USER_ARN, "attribute.aws_role": USER_ARN}


def test_custom_mapping_reads_other_assertion_fields():
    mapping = {"google.subject": "assertion.userid", "attribute.account": "assertion.account"}
    assert evaluate_mapping(mapping, _assertion(SESSION_ARN)) == {
        "google.subject": "AROAEXAMPLE:0123abcd",
        "attribute.account": "123456789012",
    }


@pytest.mark.parametrize(
    ("value", "template", "expected"),
    [
        (SESSION_ARN, "{account_arn}assumed-role/", "arn:aws:sts::123456789012:"),
        (SESSION_ARN, "assumed-role/{role_name}/", "access2bq"),
        (SESSION_ARN, "assumed-role/{rest}", "access2bq/0123abcd"),
        (USER_ARN, "assumed-role/{role_name}/", ""),
        ("a/b", "a/{x}/", ""),
    ],
)
def test_extract(value, template, expected):
    assert extract(value, template) == expected
    assert fake.extract(value, template) == expected  # the STS fake's own, written apart


def test_extract_needs_one_placeholder():
    with pytest.raises(ValueError, match="exactly one"):
        extract(SESSION_ARN, "assumed-role/")


ATTRIBUTES = {"google.subject": SESSION_ARN, "attribute.aws_role": ROLE_ARN}


@pytest.mark.parametrize(
    ("condition", "admitted"),
    [
        (f"attribute.aws_role == '{ROLE_ARN}'", True),
        ("attribute.aws_role == 'arn:aws:sts::123456789012:assumed-role/other'", False),
        ("attribute.aws_role.contains('access2bq')", True),
        ("attribute.aws_role.contains('admin')", False),
        (f"attribute.aws_role in ['x', '{ROLE_ARN}']", True),
        ("attribute.aws_role in ['x', 'y']", False),
        (f"google.subject.startsWith('{ROLE_ARN}/') && attribute.aws_role.endsWith('2bq')", True),
        (f"google.subject.startsWith('{ROLE_ARN}/') && attribute.aws_role.endsWith('x')", False),
    ],
)
def test_condition(condition, admitted):
    assert evaluate_condition(condition, ATTRIBUTES) is admitted


def test_condition_can_read_the_assertion():
    condition = "assertion.account == '123456789012'"
    assert evaluate_condition(condition, ATTRIBUTES, assertion=_assertion(SESSION_ARN)) is True


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("attribute.aws_role ==", "does not parse"),
        ("attribute.nope == 'x'", "failed: no such member"),
        ("attribute.aws_role.frobnicate()", "failed: undeclared reference to 'frobnicate'"),
        ("attribute.aws_role", "not a boolean"),
    ],
)
def test_bad_condition_raises_value_error_naming_it(condition, message):
    with pytest.raises(ValueError, match=message) as info:
        evaluate_condition(condition, ATTRIBUTES)
    assert repr(condition) in str(info.value)
    assert "activation" not in str(info.value)  # celpy's internal dump is cut off


def test_bad_mapping_names_the_attribute():
    with pytest.raises(ValueError, match=r"Attribute mapping attribute\.x: .*does not parse"):
        evaluate_mapping({"attribute.x": "assertion.arn +"}, _assertion(SESSION_ARN))
    with pytest.raises(ValueError, match="not a string"):
        evaluate_mapping({"attribute.x": "assertion.arn.size()"}, _assertion(SESSION_ARN))


@pytest.mark.parametrize("arn", [SESSION_ARN, USER_ARN, "arn:aws:sts::123456789012:role/x"])
@pytest.mark.parametrize(
    "condition",
    [
        f"attribute.aws_role == '{ROLE_ARN}'",
        "attribute.aws_role.contains('access2bq')",
        f"google.subject.startsWith('{ROLE_ARN}/') && attribute.aws_role.endsWith('2bq')",
        "assertion.account == '123456789012'",
        "attribute.nope == 'x'",  # fails: blocks.cel raises, Google (and its fake) rejects
    ],
)
def test_the_fake_sts_evaluates_independently_and_agrees(arn, condition):
    # standins.google evaluates with its own copy of the default mapping and its own extract();
    # where both answer, they must give the same verdict, so the doctor's is worth trusting.
    assertion = {"arn": arn, "account": "123456789012"}
    attributes = evaluate_mapping(DEFAULT_AWS_MAPPING, assertion)
    assert fake.map_attributes(fake.AWS_DEFAULT_MAPPING, assertion) == attributes
    try:
        expected = evaluate_condition(condition, attributes, assertion=assertion)
    except ValueError:
        expected = False
    assert fake.admits(condition, attributes, assertion) is expected
