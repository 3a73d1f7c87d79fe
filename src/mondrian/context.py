"""What a use case runs with: the loaded model, the state and the settings.

The strategies (strategies/), portfolio indexing (portfolio/) and the service's jobs all
take one; it sits below them so that none has to import another for it."""

from __future__ import annotations

from dataclasses import dataclass

from mondrian.backends.protocol import Backend
from mondrian.config import Settings
from mondrian.storage.db import Database


@dataclass
class Context:
    """The loaded model and the state a strategy reads."""

    backend: Backend
    db: Database
    settings: Settings
    # The model variant the service's policy chose for this request ('base' or
    # 'fine_tuned'); None where no policy applies (CLI). 'base' makes `lora` unavailable.
    variant: str | None = None
