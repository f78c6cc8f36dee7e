"""The Prefect block that gives Google credentials to an ECS task, keyless.

`AwsWorkloadIdentityCredentials` holds the `external_account` credential configuration that
the Google console or `gcloud iam workload-identity-pools create-cred-config --aws` writes (it
holds no secret) and the project. It builds `google.auth.aws.Credentials` fed by
`AwsEcsTaskRoleSupplier`, which reads the task role's rotating AWS credentials; Google STS
exchanges those for a federated token and IAM Credentials for a service-account token. Being a
`prefect_gcp.GcpCredentials`, it works with every prefect-gcp task and `get_*_client()` helper.

Save one from a config file with `save_credentials_block()` (or
`python -m blocks save-credentials --config FILE --project P --name NAME`).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Self
from urllib.parse import urlsplit
from uuid import UUID

from prefect_gcp import GcpCredentials
from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from blocks.ecs import AwsEcsTaskRoleSupplier, is_loopback
from blocks.federation import WorkloadIdentityCredentials

CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
AWS_SUBJECT_TOKEN_TYPE: Final = "urn:ietf:params:aws:token-type:aws4_request"  # noqa: S105
_REQUIRED_KEYS: Final = ("audience", "subject_token_type", "token_url")
_RUNTIME: Final = frozenset({"_supplier", "_credentials", "_retry_sleep", "_lock"})


class AwsWorkloadIdentityCredentials(GcpCredentials):
    """Google credentials for an AWS ECS task via Workload Identity Federation, with no key.

    The task role's AWS credentials (from the ECS container credentials endpoint, re-read as ECS
    rotates them) are exchanged at Google STS for a federated token, then, when the
    configuration names a service account, for that service account's access token. Nothing
    secret is stored in the block: the credential configuration only says where to exchange.
    """

    _block_type_name = "AWS Workload Identity Credentials"
    _block_type_slug = "aws-workload-identity-credentials"
    _description = (
        "Keyless Google Cloud credentials for AWS ECS/Fargate tasks: the ECS task role is "
        "exchanged for a Google token through Workload Identity Federation."
    )
    _documentation_url = (
        "https://cloud.google.com/iam/docs/workload-identity-federation-with-other-clouds"
    )

    # Inherited key fields make no sense for a keyless block: hide them and reject values.
    service_account_file: SkipJsonSchema[None] = Field(
        default=None, description="Not used: this block holds no key."
    )
    service_account_info: SkipJsonSchema[None] = Field(
        default=None, description="Not used: this block holds no key."
    )

    credential_config: dict[str, Any] = Field(
        default=...,
        description=(
            "The credential configuration JSON for an AWS provider (`type: external_account`), "
            "as written by `gcloud iam workload-identity-pools create-cred-config --aws` or the "
            "console. `token_url` and `service_account_impersonation_url` are read from it; "
            "`credential_source` is ignored (the ECS task role supplies AWS credentials)."
        ),
    )
    project: str = Field(
        default=...,
        min_length=1,
        description="The Google Cloud project the clients bill and run jobs in.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: [CLOUD_PLATFORM_SCOPE],
        min_length=1,
        description="OAuth scopes of the Google access token.",
    )
    token_lifetime_seconds: int | None = Field(
        default=None,
        ge=600,
        le=43200,
        description=(
            "Lifetime of the impersonated service-account token (600-43200 s; Google's default "
            "is 3600). Longer means fewer exchanges; beyond 3600 the organization policy "
            "`iam.allowServiceAccountCredentialLifetimeExtension` must allow it."
        ),
    )
    quota_project_id: str | None = Field(
        default=None,
        description="Project billed for API quota, if not the service account's project.",
    )
    exchange_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description=(
            "Tries per Google STS / IAM call on connection errors and HTTP 408/429/5xx, 1 s "
            "apart, then 2 s, ...; the step's own retries come on top."
        ),
    )

    _supplier: AwsEcsTaskRoleSupplier | None = PrivateAttr(default=None)
    _credentials: WorkloadIdentityCredentials | None = PrivateAttr(default=None)
    _retry_sleep: Callable[[float], None] | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("credential_config", mode="before")
    @classmethod
    def _parse_credential_config(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"credential_config is not valid JSON: {exc}") from None
        return value

    @field_validator("credential_config")
    @classmethod
    def _check_credential_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        if config.get("type") != "external_account":
            raise ValueError(
                f"credential_config['type'] is {config.get('type')!r}, expected "
                "'external_account': use the file from `gcloud iam workload-identity-pools "
                "create-cred-config --aws`, not a service-account key."
            )
        missing = [key for key in _REQUIRED_KEYS if not config.get(key)]
        if missing:
            raise ValueError(
                f"credential_config lacks {', '.join(missing)}; regenerate it with "
                "`gcloud iam workload-identity-pools create-cred-config --aws`."
            )
        if config["subject_token_type"] != AWS_SUBJECT_TOKEN_TYPE:
            raise ValueError(
                f"credential_config['subject_token_type'] is {config['subject_token_type']!r}, "
                f"expected {AWS_SUBJECT_TOKEN_TYPE!r}: the provider must be an AWS provider."
            )
        for key in ("token_url", "service_account_impersonation_url"):
            url = str(config.get(key) or "")
            parts = urlsplit(url)
            if url and not (
                parts.scheme == "https"
                or (parts.scheme == "http" and is_loopback(parts.hostname or ""))
            ):
                # The doctor and every run send the signed AWS request (or a Google token) there.
                raise ValueError(
                    f"credential_config['{key}'] {url!r} must use https (plain http only to a "
                    "loopback address, for local stand-ins): a signed AWS request or a Google "
                    "token is sent there. Regenerate the file with `gcloud iam "
                    "workload-identity-pools create-cred-config --aws`."
                )
        audience = str(config["audience"])
        if "/workloadIdentityPools/" not in audience or "/providers/" not in audience:
            raise ValueError(
                f"credential_config['audience'] {audience!r} is not a provider name "
                "like //iam.googleapis.com/projects/NUMBER/locations/global/"
                "workloadIdentityPools/POOL/providers/PROVIDER."
            )
        return config

    @model_validator(mode="after")
    def _check_lifetime_needs_impersonation(self) -> Self:
        if self.token_lifetime_seconds and not self.credential_config.get(
            "service_account_impersonation_url"
        ):
            raise ValueError(
                "token_lifetime_seconds applies only to service-account impersonation, but "
                "credential_config has no service_account_impersonation_url. Remove "
                "token_lifetime_seconds or regenerate the config with --service-account."
            )
        return self

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        # Prefect and pydantic deep-copy blocks; a lock can't be copied, and a copy of the same
        # block may as well share the supplier's cache and the Google credentials.
        clone = copy.copy(self)
        object.__setattr__(clone, "__dict__", copy.deepcopy(self.__dict__, memo))
        private = {
            key: value if key in _RUNTIME else copy.deepcopy(value, memo)
            for key, value in (self.__pydantic_private__ or {}).items()
        }
        private["_lock"] = threading.Lock()
        object.__setattr__(clone, "__pydantic_private__", private)
        return clone

    def __getstate__(self) -> dict[Any, Any]:
        # Pickled into another process, the block reads that process's AWS environment afresh.
        state = super().__getstate__()
        private = state.get("__pydantic_private__") or {}
        state["__pydantic_private__"] = {k: v for k, v in private.items() if k not in _RUNTIME}
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        private = self.__pydantic_private__
        private.update(_supplier=None, _credentials=None, _retry_sleep=None, _lock=threading.Lock())

    def __eq__(self, other: object) -> bool:
        # pydantic also compares private attributes, i.e. our lock and caches: two blocks are
        # equal when their fields are.
        if not isinstance(other, AwsWorkloadIdentityCredentials):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((json.dumps(self.credential_config, sort_keys=True), self.project))

    def block_initialization(self) -> None:
        """Skip prefect-gcp's `google.auth.default()` lookup: everything is in the config."""
        url = self.credential_config.get("service_account_impersonation_url") or ""
        if ":generateAccessToken" in url:
            self._service_account_email = url.rsplit("/", 1)[-1].split(":")[0]

    @property
    def service_account_email(self) -> str | None:
        """The impersonated service account, if the configuration names one."""
        return self._service_account_email

    def build_supplier(self, **overrides: Any) -> AwsEcsTaskRoleSupplier:
        """A new AWS credentials supplier; `overrides` go to `AwsEcsTaskRoleSupplier`."""
        return AwsEcsTaskRoleSupplier(**overrides)

    @property
    def supplier(self) -> AwsEcsTaskRoleSupplier:
        """This block's supplier: one per block, so its credentials cache is shared."""
        with self._lock:
            if self._supplier is None:
                self._supplier = self.build_supplier()
            return self._supplier

    def with_runtime(
        self,
        *,
        supplier: AwsEcsTaskRoleSupplier | None = None,
        retry_sleep: Callable[[float], None] | None = None,
    ) -> Self:
        """Use this supplier / sleep from now on (tests and the doctor inject them).

        Returns:
            This block, for chaining.
        """
        with self._lock:
            if supplier is not None:
                self._supplier = supplier
            if retry_sleep is not None:
                self._retry_sleep = retry_sleep
            self._credentials = None
        return self

    def get_credentials_from_service_account(self) -> WorkloadIdentityCredentials:
        """The block's Google credentials (built once, refreshed by google-auth as needed).

        Returns:
            `google.auth.aws.Credentials` (our subclass) fed by the ECS task-role supplier.
        """
        supplier = self.supplier
        with self._lock:
            if self._credentials is None:
                self._credentials = self.build_credentials(supplier)
            return self._credentials

    def build_credentials(
        self, supplier: AwsEcsTaskRoleSupplier | None = None
    ) -> WorkloadIdentityCredentials:
        """New Google credentials from the configuration and `supplier` (default: the block's)."""
        info = {k: v for k, v in self.credential_config.items() if k != "credential_source"}
        if self.token_lifetime_seconds:
            info["service_account_impersonation"] = {
                **(info.get("service_account_impersonation") or {}),
                "token_lifetime_seconds": self.token_lifetime_seconds,
            }
        if self.quota_project_id:
            info["quota_project_id"] = self.quota_project_id
        extra: dict[str, Any] = {"retry_attempts": self.exchange_attempts}
        if self._retry_sleep is not None:
            extra["retry_sleep"] = self._retry_sleep
        # The supplier must be given to the constructor: set afterwards, it is lost when
        # google-auth copies the credentials for impersonation.
        return WorkloadIdentityCredentials.from_info(
            info,
            aws_security_credentials_supplier=supplier or self.supplier,
            scopes=list(self.scopes),
            **extra,
        )

    @classmethod
    def from_config_file(cls, path: str | Path, *, project: str, **fields: Any) -> Self:
        """Build the block from a credential configuration file.

        Args:
            path: The JSON file from `gcloud iam workload-identity-pools create-cred-config`.
            project: The Google Cloud project.
            **fields: Other block fields (scopes, token_lifetime_seconds, ...).

        Raises:
            ValueError: The file is missing, not JSON, or not an AWS external_account config.
        """
        path = Path(path).expanduser()
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"Cannot read credential config {path}: {exc.strerror}.") from None
        except ValueError as exc:
            raise ValueError(f"Credential config {path} is not valid JSON: {exc}.") from None
        return cls(credential_config=config, project=project, **fields)


def save_credentials_block(
    config_path: str | Path,
    project: str,
    name: str,
    *,
    overwrite: bool = False,
    **fields: Any,
) -> UUID:
    """Save an `AwsWorkloadIdentityCredentials` block from a credential configuration file.

    Exposed on the command line as
    `python -m blocks save-credentials --config FILE --project P --name NAME [--overwrite]`.

    Returns:
        The id of the saved block document.

    Raises:
        ValueError: The file is not a valid configuration, or the name is taken and
            `overwrite` is false.
    """
    block = AwsWorkloadIdentityCredentials.from_config_file(config_path, project=project, **fields)
    try:
        return block.save(name, overwrite=overwrite)
    except ValueError as exc:
        if "already in use" not in str(exc):
            raise
        raise ValueError(
            f"A credentials block named {name!r} already exists; pass overwrite=True "
            "(--overwrite on the command line) to replace it."
        ) from None
