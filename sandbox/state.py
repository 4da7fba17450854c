"""The shared state of one sandbox: credentials, switches, messages and randomness."""

from __future__ import annotations

import random
import threading
from typing import Any

from sandbox.callbacks import Lifecycle
from sandbox.config import SandboxConfig
from sandbox.scheduler import Scheduler
from sandbox.store import MessageStore


class SandboxState:
    """Everything one sandbox app keeps between requests, safe to use from many threads."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        config: SandboxConfig,
        seed: int | None,
        callback_workers: int = 32,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.store = MessageStore()
        self.scheduler = Scheduler(callback_workers)
        self.lifecycle = Lifecycle(self.store, auth_token, self.scheduler, self.shuffle)
        self._initial = (config, seed)
        self._lock = threading.Lock()
        self._config = config
        self._seed = seed
        self._random = random.Random(seed)
        self._rejected: list[dict[str, Any]] = []

    @property
    def config(self) -> SandboxConfig:
        """Return the switches now in force."""
        with self._lock:
            return self._config

    def configure(self, changes: dict[str, Any]) -> SandboxConfig:
        """Apply switch changes (and a new 'seed' if given) and return the new switches."""
        changes = dict(changes)
        reseed = "seed" in changes
        seed = changes.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer or null, not {seed!r}")
        with self._lock:
            self._config = self._config.updated(changes)
            if reseed:
                self._seed = seed
                self._random.seed(seed)
            return self._config

    def describe(self) -> dict[str, Any]:
        """Return the switches and the seed as a JSON-ready dictionary."""
        with self._lock:
            return {**self._config.to_dict(), "seed": self._seed}

    def chance(self, rate: float) -> bool:
        """Draw whether an event of the given probability happens."""
        with self._lock:
            return rate > 0 and self._random.random() < rate

    def choice(self, options: list[Any]) -> Any:
        """Draw one of the options."""
        with self._lock:
            return self._random.choice(options)

    def shuffle(self, items: list[Any]) -> None:
        """Shuffle a list in place."""
        with self._lock:
            self._random.shuffle(items)

    def reject(self, record: dict[str, Any]) -> None:
        """Remember a create request that was answered with an error."""
        with self._lock:
            self._rejected.append(record)

    def rejected(self) -> list[dict[str, Any]]:
        """Return the remembered rejected create requests, oldest first."""
        with self._lock:
            return list(self._rejected)

    def reset(self) -> None:
        """Forget all messages and pending callbacks and restore the starting switches and seed."""
        self.scheduler.clear()
        self.store.clear()
        with self._lock:
            self._config, self._seed = self._initial
            self._random.seed(self._seed)
            self._rejected.clear()

    def close(self) -> None:
        """Stop the background callback machinery."""
        self.scheduler.shutdown()
        self.lifecycle.close()
