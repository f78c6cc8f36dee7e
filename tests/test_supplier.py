"""AwsEcsTaskRoleSupplier against the loopback ECS / task metadata / IMDS fake."""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

import pytest
from google.auth import exceptions

from blocks.ecs import AwsEcsTaskRoleSupplier, _check_full_uri
from standins.aws import ACCOUNT_ID, TASK_ROLE
from tests.plugins.aws_google import debug_logs


def _secrets_of(ecs) -> list[str]:
    return [s for c in ecs.issued for s in (c.secret_access_key, c.token)]


def test_relative_uri_gives_the_task_role_credentials(make_supplier, ecs_environ, ecs):
    supplier = make_supplier(ecs_environ)

    creds = supplier.get_aws_security_credentials(None, None)

    [issued] = ecs.issued
    assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == (
        issued.access_key_id,
        issued.secret_access_key,
        issued.token,
    )
    source = supplier.last_source
    assert source.kind == "ecs-relative"
    assert source.where == ecs.url + ecs.relative_uri
    assert source.role_arn == f"arn:aws:iam::{ACCOUNT_ID}:role/{TASK_ROLE}"
    assert source.expiration == issued.expiration
    assert source.access_key_id_suffix == issued.access_key_id[-4:]
    assert all(secret not in repr(supplier) + repr(source) for secret in _secrets_of(ecs))


def test_credentials_are_cached_until_the_margin_before_expiration(
    make_supplier, ecs_environ, ecs, clock
):
    supplier = make_supplier(ecs_environ, refresh_margin=timedelta(minutes=5))
    first = supplier.get_aws_security_credentials(None, None)
    expires = supplier.last_source.expiration

    clock.advance(expires - clock() - timedelta(minutes=5, seconds=1))
    assert supplier.get_aws_security_credentials(None, None) == first
    assert len(ecs.requests_to("/v2/credentials")) == 1

    clock.advance(timedelta(seconds=1))  # exactly at Expiration - margin: fetch again
    supplier.get_aws_security_credentials(None, None)
    assert len(ecs.requests_to("/v2/credentials")) == 2
    assert supplier.fetch_count == 2


def test_rotated_credentials_are_picked_up_after_expiry(make_supplier, ecs_environ, ecs, clock):
    supplier = make_supplier(ecs_environ)
    first = supplier.get_aws_security_credentials(None, None)

    clock.advance(timedelta(hours=6))
    second = supplier.get_aws_security_credentials(None, None)

    assert len(ecs.issued) == 2
    assert second.access_key_id == ecs.issued[1].access_key_id != first.access_key_id
    assert supplier.last_source.expiration == ecs.issued[1].expiration


def test_concurrent_callers_share_one_fetch(make_supplier, ecs_environ, ecs):
    supplier = make_supplier(ecs_environ)
    ecs.hold = threading.Event()
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(supplier.get_aws_security_credentials(None, None))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    assert ecs.entered.wait(10)
    ecs.hold.set()
    for thread in threads:
        thread.join(10)

    assert len(results) == 8 and len({r.access_key_id for r in results}) == 1
    assert len(ecs.requests_to("/v2/credentials")) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/creds",
        "http://10.0.0.5/creds",
        "http://169.254.170.3/creds",
        "http://[fd00:ec2::24]/creds",
        "ftp://127.0.0.1/creds",
        "http://localhost.example.com/creds",
    ],
)
def test_full_uri_to_a_host_the_sdks_refuse_is_rejected_before_any_request(make_supplier, ecs, url):
    supplier = make_supplier({"AWS_CONTAINER_CREDENTIALS_FULL_URI": url})

    with pytest.raises(exceptions.RefreshError, match="No request was sent") as caught:
        supplier.get_aws_security_credentials(None, None)

    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" in str(caught.value)
    assert ecs.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "https://creds.example.com/v1",
        "http://169.254.170.2/v2/credentials/x",
        "http://169.254.170.23/v1/credentials",
        "http://[fd00:ec2::23]/v1/credentials",
        "http://127.0.0.2:8080/creds",
        "http://[::1]/creds",
        "http://localhost/creds",
    ],
)
def test_full_uri_hosts_the_sdks_allow(url):
    _check_full_uri(url)  # does not raise


def test_full_uri_sends_the_authorization_token(make_supplier, ecs):
    ecs.auth_token = "tok-123"
    supplier = make_supplier(
        {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.full_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": "tok-123",
        }
    )

    supplier.get_aws_security_credentials(None, None)

    assert supplier.last_source.kind == "ecs-full"
    assert ecs.requests_to("/full")[0].headers["authorization"] == "tok-123"


def test_full_uri_on_localhost_works(make_supplier, ecs):
    supplier = make_supplier(
        {"AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.full_uri.replace("127.0.0.1", "localhost")}
    )
    supplier.get_aws_security_credentials(None, None)
    assert len(ecs.requests_to("/full")) == 1


def test_token_file_is_read_again_on_every_fetch(make_supplier, ecs, clock, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    ecs.auth_token = "first-token"
    supplier = make_supplier(
        {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.full_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": "ignored-when-the-file-is-set",
        }
    )
    supplier.get_aws_security_credentials(None, None)

    # The agent rotates the token and rewrites the file.
    ecs.auth_token = "second-token"
    token_file.write_text("second-token")
    clock.advance(timedelta(hours=6))
    supplier.get_aws_security_credentials(None, None)

    sent = [r.headers["authorization"] for r in ecs.requests_to("/full")]
    assert sent == ["first-token", "second-token"]


def test_wrong_token_is_a_clear_error_without_retry(make_supplier, ecs, sleeps):
    ecs.auth_token = "expected"
    supplier = make_supplier(
        {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.full_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": "stale-token-value",
        }
    )

    with pytest.raises(exceptions.RefreshError, match="HTTP 401") as caught:
        supplier.get_aws_security_credentials(None, None)

    assert "AWS_CONTAINER_AUTHORIZATION_TOKEN" in str(caught.value)
    assert "stale-token-value" not in str(caught.value)
    assert len(ecs.requests_to("/full")) == 1 and sleeps.calls == []


def test_missing_token_file_names_the_variable(make_supplier, ecs, tmp_path):
    supplier = make_supplier(
        {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": ecs.full_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(tmp_path / "absent"),
        }
    )
    with pytest.raises(exceptions.RefreshError, match="AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"):
        supplier.get_aws_security_credentials(None, None)
    assert ecs.requests == []


def test_5xx_is_retried_with_backoff(make_supplier, ecs_environ, ecs, sleeps):
    ecs.fail_next(500, times=2)
    supplier = make_supplier(ecs_environ)

    supplier.get_aws_security_credentials(None, None)

    assert len(ecs.requests_to("/v2/credentials")) == 3
    assert sleeps.calls == [0.5, 1.0]


def test_endless_5xx_gives_up_naming_the_url(make_supplier, ecs_environ, ecs, sleeps):
    ecs.fail_next(503, times=5)
    supplier = make_supplier(ecs_environ, attempts=3)

    with pytest.raises(exceptions.RefreshError, match="HTTP 503 after 3 attempts") as caught:
        supplier.get_aws_security_credentials(None, None)

    assert ecs.url + ecs.relative_uri in str(caught.value)
    assert "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in str(caught.value)
    assert caught.value.retryable is True
    assert len(ecs.requests_to("/v2/credentials")) == 3


def test_slow_endpoint_times_out_and_is_retried(make_supplier, ecs_environ, ecs, sleeps):
    ecs.hold = held = threading.Event()
    supplier = make_supplier(ecs_environ, attempts=2, timeout_seconds=0.2)
    try:
        with pytest.raises(exceptions.RefreshError, match="no answer"):
            supplier.get_aws_security_credentials(None, None)
    finally:
        held.set()
    assert len(ecs.requests_to("/v2/credentials")) == 2
    assert sleeps.calls == [0.5]


def test_unreachable_endpoint_names_what_to_check(make_supplier, sleeps):
    supplier = make_supplier(
        {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"},
        ecs_host="http://127.0.0.1:9",  # discard port: nothing listens
    )
    with pytest.raises(exceptions.RefreshError, match="no answer") as caught:
        supplier.get_aws_security_credentials(None, None)
    assert "http://127.0.0.1:9/v2/credentials/x" in str(caught.value)
    assert len(sleeps.calls) == 2


def test_static_env_keys_come_after_ecs_and_are_not_cached(make_supplier, ecs):
    environ = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE1", "AWS_SECRET_ACCESS_KEY": "s3cr3t-one"}
    supplier = make_supplier(environ)

    first = supplier.get_aws_security_credentials(None, None)
    environ["AWS_ACCESS_KEY_ID"], environ["AWS_SECRET_ACCESS_KEY"] = "AKIAEXAMPLE2", "s3cr3t-two"
    environ["AWS_SESSION_TOKEN"] = "session"
    second = supplier.get_aws_security_credentials(None, None)

    assert (first.access_key_id, first.session_token) == ("AKIAEXAMPLE1", None)
    assert (second.access_key_id, second.session_token) == ("AKIAEXAMPLE2", "session")
    assert supplier.last_source.kind == "env"
    assert supplier.last_source.expiration is None
    assert "AWS_SESSION_TOKEN" in supplier.last_source.where
    assert ecs.requests == []


def test_ecs_wins_over_static_env_keys(make_supplier, ecs_environ):
    supplier = make_supplier(
        {**ecs_environ, "AWS_ACCESS_KEY_ID": "AKIAX", "AWS_SECRET_ACCESS_KEY": "x"}
    )
    supplier.get_aws_security_credentials(None, None)
    assert supplier.last_source.kind == "ecs-relative"


def test_imds_v2_is_the_last_resort(make_supplier, ecs):
    supplier = make_supplier({})

    creds = supplier.get_aws_security_credentials(None, None)

    assert creds.access_key_id == ecs.issued[0].access_key_id
    assert supplier.last_source.kind == "imds"
    assert supplier.last_source.warning is None
    calls = [(r.method, r.path) for r in ecs.requests]
    assert calls == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/iam/security-credentials/"),
        ("GET", "/latest/meta-data/iam/security-credentials/ec2-instance-role"),
    ]
    assert all(r.headers.get("x-aws-ec2-metadata-token") for r in ecs.requests[1:])


def test_imds_on_ecs_warns_about_the_instance_role_trap(make_supplier, ecs, caplog):
    caplog.set_level(logging.WARNING, logger="blocks.ecs")
    supplier = make_supplier({"ECS_CONTAINER_METADATA_URI_V4": ecs.metadata_uri})

    supplier.get_aws_security_credentials(None, None)

    assert "taskRoleArn" in supplier.last_source.warning
    assert "EC2 instance role 'ec2-instance-role'" in caplog.text


def test_nothing_configured_and_no_imds(make_supplier):
    supplier = make_supplier({}, imds_host="http://127.0.0.1:9")
    with pytest.raises(exceptions.RefreshError) as caught:
        supplier.get_aws_security_credentials(None, None)
    message = str(caught.value)
    for name in (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ACCESS_KEY_ID",
        "http://127.0.0.1:9",
        "taskRoleArn",
    ):
        assert name in message


@pytest.mark.parametrize(
    ("environ", "region"),
    [
        ({"AWS_REGION": "ap-northeast-1", "AWS_DEFAULT_REGION": "us-west-2"}, "ap-northeast-1"),
        ({"AWS_DEFAULT_REGION": "us-west-2"}, "us-west-2"),
    ],
)
def test_region_from_the_environment(make_supplier, ecs, environ, region):
    supplier = make_supplier({**environ, "ECS_CONTAINER_METADATA_URI_V4": ecs.metadata_uri})
    assert supplier.get_aws_region(None, None) == region
    assert ecs.requests == []


def test_region_from_task_metadata_once(make_supplier, ecs_environ, ecs):
    ecs.region = "eu-west-1"
    supplier = make_supplier(ecs_environ)

    assert supplier.get_aws_region(None, None) == "eu-west-1"
    assert supplier.get_aws_region(None, None) == "eu-west-1"
    assert [r.path for r in ecs.requests] == ["/v4/3f8e5b1c/task"]


def test_no_region_names_the_variables(make_supplier):
    with pytest.raises(exceptions.RefreshError, match="AWS_REGION, AWS_DEFAULT_REGION"):
        make_supplier({}).get_aws_region(None, None)


def test_supplier_never_writes_the_process_environment(ecs, clock, sleeps):
    before = dict(os.environ)
    supplier = AwsEcsTaskRoleSupplier(
        environ={"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": ecs.relative_uri},
        ecs_host=ecs.url,
        clock=clock,
        sleep=sleeps,
    )
    supplier.get_aws_security_credentials(None, None)
    assert dict(os.environ) == before


def test_no_secret_in_logs_or_errors(make_supplier, ecs_environ, ecs, clock):
    with debug_logs("blocks", "google", "urllib3", "requests") as capture:
        supplier = make_supplier(ecs_environ)
        supplier.get_aws_security_credentials(None, None)
        clock.advance(timedelta(hours=6))
        ecs.fail_next(500, times=3)
        with pytest.raises(exceptions.RefreshError) as caught:
            supplier.get_aws_security_credentials(None, None)

    text = capture.text + str(caught.value) + repr(supplier) + repr(supplier.last_source)
    assert ecs.issued and all(secret not in text for secret in _secrets_of(ecs))
    assert "AWS credentials from ecs-relative" in capture.text  # the log line exists at all
