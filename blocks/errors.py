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


class PipelineError(Exception):
    """Root of every error this pipeline raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class CredentialsError(PipelineError):
    """The task role's AWS credentials could not be exchanged for Google credentials."""


class PublishError(PipelineError):
    """Tableau refused or failed the sign-in or the publish."""
