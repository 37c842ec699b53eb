"""The error the project builder's services raise for bad input: field errors, nothing changed."""

from __future__ import annotations


class InputRejected(ValueError):
    """Invalid input: ``errors`` maps each field to its problems (an HTTP 400 with them as JSON);
    ``status`` is the HTTP status for the rare refusal that is not the input's fault (409, 413)."""

    def __init__(self, errors: dict[str, list[str]], status: int = 400) -> None:
        super().__init__("; ".join(f"{field}: {', '.join(problems)}" for field, problems in errors.items()))
        self.errors = errors
        self.status = status
