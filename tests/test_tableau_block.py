"""The TableauServer block: validation, sign-in by PAT and JWT, translated failures, no secrets."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

import jwt
import pytest
import requests
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError
from tableauserverclient.server.endpoint.exceptions import (
    FailedSignInError,
    InternalServerError,
    NonXMLResponseError,
    ServerResponseError,
)
from tableauserverclient.server.exceptions import EndpointUnavailableError

from blocks.tableau import TableauServer, translate_tableau_errors
from flows.errors import ConfigError, PublishError

PAT = {"token_name": "pipeline", "token_secret": "s3cr3t-pat-value"}
APP = {
    "client_id": "cid",
    "secret_id": "sid",
    "secret_value": "app-secret-value-0123456789abcdef-xyz",
    "username": "etl@example.com",
}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "No credentials"),
        ({"token_name": "x"}, "both token_name and token_secret"),
        ({**PAT, "client_id": "cid"}, "Choose one auth method"),
        ({"client_id": "cid", "secret_id": "sid"}, "missing secret_value, username"),
        ({**PAT, "server_url": "tableau.example.com"}, "must start with https://"),
    ],
)
def test_bad_combinations_name_the_fields(fields, message):
    with pytest.raises(ValidationError, match=message):
        TableauServer(**{"server_url": "https://tableau.example.com", **fields})


def test_concurrency_key_is_per_token_and_holds_no_secret():
    a = TableauServer(server_url="https://t.example.com", site="acme", **PAT)
    b = TableauServer(
        server_url="https://t.example.com", site="acme", **{**PAT, "token_secret": "x"}
    )
    c = TableauServer(server_url="https://t.example.com", site="acme", **{**PAT, "token_name": "y"})

    assert a.concurrency_key == b.concurrency_key != c.concurrency_key
    assert a.concurrency_key.startswith("tableau-pat-")
    assert "s3cr3t" not in a.concurrency_key


def test_secrets_stay_out_of_repr_dump_and_block_document():
    for block, secret in (
        (TableauServer(server_url="https://t.example.com", **PAT), PAT["token_secret"]),
        (TableauServer(server_url="https://t.example.com", **APP), APP["secret_value"]),
    ):
        document = block._to_block_document(
            name="prod", block_schema_id=uuid.uuid4(), block_type_id=uuid.uuid4()
        )
        for text in (repr(block), str(block), json.dumps(block.model_dump(mode="json")),
                     json.dumps(document.data, default=str)):  # fmt: skip
            assert secret not in text


def test_minted_jwt_has_the_connected_app_claims():
    block = TableauServer(server_url="https://t.example.com", **APP)
    now = dt.datetime.now(dt.UTC)
    token = block._mint_jwt(now)

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, APP["secret_value"], algorithms=["HS256"], audience="tableau")
    assert header["kid"] == "sid" and header["iss"] == "cid"
    assert claims["iss"] == "cid" and claims["sub"] == "etl@example.com"
    assert "tableau:datasources:update" in claims["scp"] and claims["jti"]
    assert claims["exp"] <= (now + dt.timedelta(minutes=10)).timestamp()
    assert block._mint_jwt(now) != token  # a fresh jti per sign-in


def test_pat_sign_in_uses_the_server_version_and_signs_out(tableau_fake, tableau_block):
    with tableau_block.sign_in() as server:
        assert server.version == tableau_fake.rest_version
        assert tableau_fake.active_sessions == 1
    assert tableau_fake.active_sessions == 0 and tableau_fake.signouts == 1


def test_jwt_sign_in_works(tableau_fake, tableau_jwt_block):
    with tableau_jwt_block.sign_in() as server:
        projects, _ = server.projects.get()
    assert [p.name for p in projects] == ["default"]
    assert tableau_fake.active_sessions == 0


def test_signs_out_when_the_body_fails(tableau_fake, tableau_block):
    with pytest.raises(RuntimeError, match="boom"), tableau_block.sign_in():
        raise RuntimeError("boom")
    assert tableau_fake.active_sessions == 0 and tableau_fake.signouts == 1


def test_bad_token_is_clear_and_not_retryable(tableau_fake):
    block = TableauServer(
        server_url=tableau_fake.url, site="acme", token_name="pipeline", token_secret="wrong"
    )
    expected = "rejected the sign-in of personal access token"
    with pytest.raises(PublishError, match=expected) as info, block.sign_in():
        pass
    assert not info.value.retryable
    assert "'acme'" in str(info.value) and "expire" in str(info.value)


def test_unknown_site_is_named(tableau_fake, tableau_block):
    block = tableau_block.model_copy(update={"site": "nope"})
    with pytest.raises(PublishError, match="site 'nope'") as info, block.sign_in():
        pass
    assert "content URL" in str(info.value)


def test_bad_jwt_secret_is_clear(tableau_fake, tableau_jwt_block):
    block = tableau_jwt_block.model_copy(update={"secret_value": SecretStr("wrong" * 8)})
    with (
        pytest.raises(PublishError, match="connected app 'app-client-id'") as info,
        block.sign_in(),
    ):
        pass
    assert not info.value.retryable


def test_401002_at_sign_in_says_to_serialize(tableau_fake, tableau_block):
    tableau_fake.fail_signin("401002")
    with (
        pytest.raises(PublishError, match="one session at a time") as info,
        tableau_block.sign_in(),
    ):
        pass
    assert tableau_block.concurrency_key in str(info.value)
    assert not info.value.retryable


def test_second_sign_in_with_the_same_pat_ends_the_first(tableau_fake, tableau_block):
    with tableau_block.sign_in() as first, tableau_block.sign_in() as second:
        second.projects.get()
        with pytest.raises(FailedSignInError) as info:
            first.projects.get()
    assert info.value.code == "401002"
    assert tableau_fake.active_sessions == 0


def test_5xx_at_sign_in_is_retryable(tableau_fake, tableau_block):
    tableau_fake.fail_signin("500000", status=503)
    with pytest.raises(PublishError, match="unreachable") as info, tableau_block.sign_in():
        pass
    assert info.value.retryable


def test_unreachable_server_is_retryable():
    block = TableauServer(server_url="http://127.0.0.1:9", http_timeout=5, **PAT)
    with pytest.raises(PublishError, match="unreachable") as info, block.sign_in():
        pass
    assert info.value.retryable


def _answer(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, b"<html>Service Unavailable</html>"
    return response


@pytest.mark.parametrize(
    ("exc", "retryable", "says"),
    [
        (FailedSignInError("401001", "Signin Error", "bad token"), False, "rejected the sign-in"),
        (FailedSignInError("401002", "Signin Error", "replaced"), False, "one session at a time"),
        (ServerResponseError("500000", "Internal", "boom"), True, "refused to look up"),
        (ServerResponseError("429000", "Too Many Requests", "slow down"), True, "429000"),
        (ServerResponseError("403007", "Exists", "datasource exists"), False, "Creator or Ex"),
        (ServerResponseError("404002", "Not Found", "no project"), False, "tableau.project"),
        (InternalServerError(_answer(503), "https://t.example.com/api"), True, "HTTP 503"),
        (NonXMLResponseError(b"<html>Forbidden</html>"), False, "not a Tableau REST error"),
        (EndpointUnavailableError("Requires 3.13"), False, "tableau.mode=overwrite"),
        (requests.ConnectionError("reset by peer"), True, "unreachable"),
        (requests.Timeout("read timed out"), True, "unreachable"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_tableau_errors_are_translated_once_with_their_verdict(exc, retryable, says):
    block = TableauServer(server_url="https://t.example.com", **PAT)
    with (
        pytest.raises(PublishError, match=says) as info,
        translate_tableau_errors("look up project 'Ads'", block),
    ):
        raise exc
    assert info.value.retryable is retryable
    assert type(info.value) is PublishError and info.value.__context__ is exc
    assert info.value.__cause__ is None  # the vendor error may reference a request with secrets


@pytest.mark.parametrize("exc", [ConfigError("ours"), PublishError("ours"), ValueError("a bug")])
def test_our_errors_and_unknown_ones_pass_the_translation_untouched(exc):
    block = TableauServer(server_url="https://t.example.com", **PAT)
    with pytest.raises(type(exc)) as info, translate_tableau_errors("do it", block):
        raise exc
    assert info.value is exc


def test_sign_in_logs_hold_no_secret(tableau_fake, tableau_block, tableau_jwt_block, caplog):
    caplog.set_level(logging.DEBUG)
    for block in (tableau_block, tableau_jwt_block):
        with block.sign_in() as server:
            server.projects.get()
    assert caplog.records
    for secret in (*tableau_fake.pats.values(), *(v for _, v in tableau_fake.apps.values())):
        assert secret not in caplog.text


class TestBlockStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return TableauServer

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # No logo is shipped (the standard check would download one); the UI shows a default.
        assert block._logo_url is None

    def test_slug_and_name(self, block: type[Block]) -> None:
        assert block.get_block_type_slug() == "tableau-server"
        assert block.get_block_type_name() == "Tableau Server"


def test_the_fake_records_two_sessions_of_one_token_at_once(tableau_fake, tableau_block):
    # What test_catalog_flows.py's turn-taking test relies on to prove runs never overlapped.
    with tableau_block.sign_in():
        pass
    with tableau_block.sign_in():
        pass
    assert tableau_fake.peak_pat_sessions == 1  # one after the other: never two at once

    # TSC's FailedSignInError is its name for any 401, here 401002: the second sign-in ended
    # the first session.
    with (
        tableau_block.sign_in() as first,
        tableau_block.sign_in(),
        pytest.raises(FailedSignInError),
    ):
        first.projects.get()
    assert tableau_fake.peak_pat_sessions == 2
