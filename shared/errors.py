"""The domain's refusal: a request the user can fix, with the contract's message."""

from __future__ import annotations


class Rejected(Exception):
    """A send refused for a reason the user can fix; `message` is the contract's text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
