"""A secret in a config: inline `value`, a `file` holding it, or an `env` variable. It is
read when used, never shown: pydantic keeps an inline value as SecretStr, and the errors
name where the secret should have been, never what it is."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from probes.base import ProbeFailure


class SecretError(ProbeFailure):
    """The secret could not be read (a missing file, an unset variable)."""


class Secret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: SecretStr | None = None
    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        if sum(x is not None for x in (self.value, self.file, self.env)) != 1:
            raise ValueError("give exactly one of value, file, env")
        return self

    def reveal(self, what: str) -> str:
        if self.value is not None:
            return self.value.get_secret_value()
        if self.file is not None:
            try:
                return self.file.read_text().strip()
            except OSError as exc:
                raise SecretError(f"cannot read the {what} file {self.file}: "
                                  f"{exc.strerror or exc}") from None
        value = os.environ.get(self.env or "")
        if value is None:
            raise SecretError(f"the {what} environment variable {self.env} is not set")
        return value
