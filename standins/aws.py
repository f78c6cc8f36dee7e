"""AWS stand-ins: moto for STS, plus the ECS credentials, task metadata and EC2 IMDSv2 endpoints.

`MotoAws` runs moto's server on loopback with signature checking on, and an "ECS agent" IAM user
that may assume the task roles. `EcsMetadataServer` plays the three metadata endpoints a task can
see, handing out *real* moto credentials of an assumed role, so the ARN is a real assumed-role ARN
and a signed GetCallerIdentity made with them verifies at moto:

- `GET {relative_uri}` and `GET /full{relative_uri}` (FULL_URI, Authorization checked when
  `auth_token` is set): `{"RoleArn", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`.
- `GET /v4/{id}/task`: ECS task metadata v4 (`TaskARN`, `AvailabilityZone`).
- `PUT /latest/api/token`, `GET /latest/meta-data/iam/security-credentials/[role]`: IMDSv2.

Credentials rotate when the injected clock passes `expiration - rotate_before` (as the ECS agent
does) or on `rotate()`. `fail_next()`, `hold` and `auth_token` inject failures.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from moto.server import ThreadedMotoServer

from standins.loopback import LoopbackServer, Request, Response

ACCOUNT_ID: Final = "123456789012"  # moto's default account
REGION: Final = "us-east-1"
TASK_ROLE: Final = "access2bq"  # the role the reference write-up admits
OTHER_ROLE: Final = "ecsTaskExecutionRole"  # the role it shows being rejected
AGENT_USER: Final = "ecs-agent"
RELATIVE_URI: Final = "/v2/credentials/3f8e5b1c-task"
_AUTHORIZATION: Final = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([^,]+), Signature=([0-9a-f]+)$"
)
_AGENT_POLICY: Final = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
    }
)


class ManualClock:
    """A UTC clock that moves only when told to; pass it as `clock=` to code under test."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta


# Who may assume the fake's roles: ECS tasks, and the agent user that plays the ECS agent.
_TRUST: Final = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {
                    "Service": "ecs-tasks.amazonaws.com",
                    "AWS": f"arn:aws:iam::{ACCOUNT_ID}:user/{AGENT_USER}",
                },
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def role_arn(role: str = TASK_ROLE) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:role/{role}"


class MotoAws:
    """moto's server on 127.0.0.1 with signature checks on and assumable task roles."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self._lock = threading.Lock()
        self._sessions = 0
        self._secrets: dict[str, tuple[str, str]] = {}  # access key id -> (secret, token)
        self._sts_clients: dict[str, Any] = {}
        self._setup()

    def _client(self, service: str, key: str = "setup", secret: str = "setup", **kw: Any) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            **kw,
        )

    def _setup(self) -> None:
        iam = self._client("iam")
        iam.create_user(UserName=AGENT_USER)
        iam.put_user_policy(
            UserName=AGENT_USER, PolicyName="assume-task-roles", PolicyDocument=_AGENT_POLICY
        )
        key = iam.create_access_key(UserName=AGENT_USER)["AccessKey"]
        for role in (TASK_ROLE, OTHER_ROLE):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=_TRUST)
        self._agent = (key["AccessKeyId"], key["SecretAccessKey"])
        # From now on moto checks every request's signature (and the agent's policies).
        self._post("/moto-api/reset-auth", b"0")

    @contextmanager
    def without_auth_checks(self) -> Iterator[None]:
        """Let moto accept any signature and policy for a while (moto models IAM resources only
        as `*`, so resource-scoped policies cannot be checked on it)."""
        self._post("/moto-api/reset-auth", b"100000")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"0")

    def _post(self, path: str, body: bytes) -> None:
        requests.post(self.url + path, data=body, timeout=5).raise_for_status()

    def assume_role(self, role: str = TASK_ROLE, seconds: int = 3600) -> dict[str, str]:
        """Real STS credentials of `role`, assumed by the ECS agent user."""
        with self._lock:
            self._sessions += 1
            session = f"ecs-task-{self._sessions:04d}"
        sts = self._client("sts", *self._agent)
        answer = sts.assume_role(
            RoleArn=role_arn(role), RoleSessionName=session, DurationSeconds=seconds
        )
        creds = answer["Credentials"]
        with self._lock:
            self._secrets[creds["AccessKeyId"]] = (creds["SecretAccessKey"], creds["SessionToken"])
        return {
            "AccessKeyId": creds["AccessKeyId"],
            "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds["SessionToken"],
            "Arn": answer["AssumedRoleUser"]["Arn"],
        }

    def revoke(self, access_key_id: str) -> None:
        """Make STS refuse these credentials from now on (as after a revoked session)."""
        with self._lock:
            self._secrets.pop(access_key_id, None)

    def caller_arn(self, url: str, method: str, headers: dict[str, str]) -> str:
        """Verify a SigV4-signed GetCallerIdentity request and return the caller's ARN.

        moto cannot check this request itself: it hashes the query parameters as if they were
        the body, while the signer hashed an empty body. So the signature is checked here with
        botocore against the secret moto issued, then moto is asked, with those credentials over
        HTTP (signature checked by moto), who the caller is.

        Raises:
            AwsRejected: Unknown key, wrong session token or signature, as AWS STS would say.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        authorization = lower.get("authorization", "")
        match = _AUTHORIZATION.match(authorization)
        if not match:
            raise AwsRejected("IncompleteSignature", "The request signature is malformed.")
        key_id, region, service, signed, signature = match.groups()
        with self._lock:
            secret_token = self._secrets.get(key_id)
        if secret_token is None or lower.get("x-amz-security-token") != secret_token[1]:
            raise AwsRejected(
                "InvalidClientTokenId", "The security token included in the request is invalid."
            )
        names = signed.split(";")
        request = AWSRequest(
            method=method, url=url, data=b"", headers={n: lower.get(n, "") for n in names}
        )
        request.context["timestamp"] = lower.get("x-amz-date", "")
        auth = SigV4Auth(BotoCredentials(key_id, *secret_token), service, region)
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, signature):
            raise AwsRejected(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        with self._lock:
            sts = self._sts_clients.get(key_id)
            if sts is None:
                sts = self._client(
                    "sts", key_id, secret_token[0], aws_session_token=secret_token[1]
                )
                self._sts_clients[key_id] = sts
        return sts.get_caller_identity()["Arn"]

    def close(self) -> None:
        self._server.stop()


class AwsRejected(Exception):
    """AWS STS refused a request; `code` is AWS's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class IssuedCredentials:
    """One set of task credentials the fake handed out (kept for assertions)."""

    role: str
    access_key_id: str
    secret_access_key: str
    token: str
    arn: str
    expiration: datetime

    def document(self) -> dict[str, str]:
        return {
            "RoleArn": role_arn(self.role),
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.token,
            "Expiration": self.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class EcsMetadataServer(LoopbackServer):
    """ECS container credentials + task metadata v4 + EC2 IMDSv2 on one loopback server.

    Args:
        moto: Where credentials come from.
        clock: The clock deciding expiry and rotation; share it with the supplier under test.
        lifetime: How long each set of credentials is valid.
        rotate_before: Hand out new credentials this long before the current ones expire.
    """

    def __init__(
        self,
        moto: MotoAws,
        clock: ManualClock | None = None,
        lifetime: timedelta = timedelta(hours=6),
        rotate_before: timedelta = timedelta(minutes=15),
    ) -> None:
        self.moto = moto
        self.lifetime = lifetime
        self.rotate_before = rotate_before
        self.clock = clock or ManualClock()
        self.issued: list[IssuedCredentials] = []
        super().__init__()
        self.reset()

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.role = TASK_ROLE
            self.instance_role = "ec2-instance-role"
            self.auth_token: str | None = None
            self.region = REGION
            self.hold: threading.Event | None = None
            self.entered = threading.Event()  # set when a credentials request arrives
            self._failures: list[int] = []
            self._current: IssuedCredentials | None = None
            self._imds_token = "imds-session-token"
            self.issued = []

    # -- test controls -------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` credential requests with `status`."""
        with self._lock:
            self._failures.extend([status] * times)

    def rotate(self) -> IssuedCredentials:
        """Issue new credentials now (the old ones stay valid at moto)."""
        with self._lock:
            self._current = None
        return self.current()

    def current(self) -> IssuedCredentials:
        """The credentials the endpoint hands out now, rotating them if due."""
        with self._lock:
            now = self.clock()
            cur = self._current
            if cur is None or now >= cur.expiration - self.rotate_before:
                raw = self.moto.assume_role(self.role)
                cur = IssuedCredentials(
                    role=self.role,
                    access_key_id=raw["AccessKeyId"],
                    secret_access_key=raw["SecretAccessKey"],
                    token=raw["Token"],
                    arn=raw["Arn"],
                    expiration=now + self.lifetime,
                )
                self._current = cur
                self.issued.append(cur)
            return cur

    def requests_to(self, prefix: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    # -- HTTP ----------------------------------------------------------------------------

    @property
    def relative_uri(self) -> str:
        return RELATIVE_URI

    @property
    def full_uri(self) -> str:
        return f"{self.url}/full{RELATIVE_URI}"

    @property
    def metadata_uri(self) -> str:
        return f"{self.url}/v4/3f8e5b1c"

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/latest/"):
            return self._imds(request)
        if request.path.startswith("/v4/"):
            return self._task_metadata(request)
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(timeout=30)
        if (
            request.path == f"/full{RELATIVE_URI}"
            and self.auth_token is not None
            and request.headers.get("authorization") != self.auth_token
        ):
            return Response.json({"message": "Unauthorized"}, status=401)
        if request.path not in (RELATIVE_URI, f"/full{RELATIVE_URI}"):
            return Response.json({"message": "Not Found"}, status=404)
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure:
            return Response.json({"message": "injected failure"}, status=failure)
        return Response.json(self.current().document())

    def _task_metadata(self, request: Request) -> Response:
        if not request.path.endswith("/task"):
            return Response.json({"message": "Not Found"}, status=404)
        return Response.json(
            {
                "Cluster": "default",
                "TaskARN": f"arn:aws:ecs:{self.region}:{ACCOUNT_ID}:task/default/3f8e5b1c",
                "Family": "bq-to-tableau",
                "AvailabilityZone": f"{self.region}b",
                "LaunchType": "FARGATE",
            }
        )

    def _imds(self, request: Request) -> Response:
        if request.path == "/latest/api/token":
            if request.method != "PUT":
                return Response(405)
            return Response(200, self._imds_token.encode(), {"Content-Type": "text/plain"})
        if request.headers.get("x-aws-ec2-metadata-token") != self._imds_token:
            return Response(401)
        base = "/latest/meta-data/iam/security-credentials/"
        if request.path == base:
            return Response(200, self.instance_role.encode(), {"Content-Type": "text/plain"})
        if request.path == base + self.instance_role:
            document = self.current().document()
            document.pop("RoleArn")
            return Response.json({"Code": "Success", "Type": "AWS-HMAC", **document})
        return Response(404)
