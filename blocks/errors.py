"""The errors every layer shares, defined at the bottom floor so that `blocks/` imports nothing
from `flows/` (the HTTP statuses worth retrying are `blocks.retry`'s).

```
PipelineError              root; `retryable` says whether running the step again can help
 ├─ CredentialsError       the AWS -> Google exchange failed (raised by blocks.federation)
 └─ PublishError           Tableau refused or failed (its answers translated in blocks.tableau)
```

`flows.errors` re-exports these and adds the step errors (config, export, download, build,
schema drift) below the same root.
"""

from __future__ import annotations

from google.auth.exceptions import RefreshError


class PipelineError(Exception):
    """Root of every error this pipeline raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class CredentialsError(PipelineError, RefreshError):
    """The task role's AWS credentials could not be exchanged for Google credentials.

    Also a google-auth `RefreshError`, so google-auth and the Google clients treat it as the
    failed refresh it is. The message is `problem` (what failed, in Google's or AWS's words)
    followed by `fix` (from `blocks.explain`'s table).

    Attributes:
        problem: What failed, without the fix.
        fix: What to change, or None when the failure is not a known one.
        known: The key of the `blocks.explain` table entry that gave the fix, so the doctor can
            fill the same fix in with what it found.
    """

    def __init__(
        self,
        problem: str,
        *,
        fix: str | None = None,
        known: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(f"{problem} {fix}" if fix else problem, retryable=retryable)
        self.problem = problem
        self.fix = fix
        self.known = known

    # google-auth keeps its flag in `_retryable` behind a read-only `retryable` property, which
    # PipelineError's attribute would otherwise shadow: one flag serves both parents.
    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """Whether a later attempt can succeed (also what google-auth reads)."""
        return self._retryable

    @retryable.setter
    def retryable(self, value: bool) -> None:
        self._retryable = value


class PublishError(PipelineError):
    """Tableau refused or failed the sign-in or the publish.

    Attributes:
        code: Tableau's error code (e.g. "401001") when Tableau answered one.
    """

    code: str | None = None
