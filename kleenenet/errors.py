"""Errors the user can act on. Anything else is a bug and keeps its traceback."""


class KleenenetError(Exception):
    """A user-facing error: one line, exit 1 (CLI) or 4xx (API)."""

    status = 400


class InvalidInput(KleenenetError):
    status = 400


class NotFound(KleenenetError):
    status = 404


class Conflict(KleenenetError):
    status = 409


class HostError(KleenenetError):
    """The host refused an operation (netlink, nft, a process); changes were rolled back."""

    status = 500
