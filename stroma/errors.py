"""Every error Stroma raises, under one root.

::

    StromaError
    ├── ConfigurationError        misuse: a node without a contract, a bad argument, a bad return value
    │   ├── NodeReturnTypeError   a node returned something that is not a dict or a usage tuple
    │   ├── MissingExtraError     (also an ImportError) an optional dependency is not installed
    │   └── InvalidUsageError     a usage record with a negative token count, cost or latency
    ├── ContractViolation         (stroma.contracts) data crossed a node boundary and failed its schema
    ├── BudgetExceeded            (stroma.cost) a token / cost / latency budget ran out
    ├── ResumeError               resuming is not possible as asked
    │   ├── UnknownNodeError      resume_from names no node of the pipeline
    │   ├── CheckpointMissingError the checkpoint a resume needs is not in the store
    │   ├── ResumeMismatchError   the pipeline changed since the checkpoints were written
    │   └── RunLeasedError        another worker is resuming this run right now
    │       └── LeaseLostError    this worker's lease was taken over: its commit was refused
    ├── SchemaResolutionError     (also a TypeError) a stored schema reference names no registered schema
    ├── CheckpointDataError       a stored payload is not valid for its schema, or is hostile
    ├── StoreUnavailableError     a checkpoint store could not be reached (classified RECOVERABLE)
    └── RunFileError              a run file cannot be read: names the file, line and field

Messages say what happened, with which value, and what to do.
"""

from __future__ import annotations

__all__ = [
    "CheckpointDataError",
    "CheckpointEncodeError",
    "CheckpointMissingError",
    "ConfigurationError",
    "InvalidUsageError",
    "LeaseLostError",
    "MissingExtraError",
    "NodeReturnTypeError",
    "NodeTimeoutError",
    "ResumeError",
    "ResumeMismatchError",
    "RunFileError",
    "RunLeasedError",
    "SchemaResolutionError",
    "StoreDataError",
    "StoreUnavailableError",
    "StromaError",
    "UnknownNodeError",
]


class StromaError(Exception):
    """Root of every error Stroma raises on purpose."""


class ConfigurationError(StromaError):
    """The library was used in a way it cannot work with; the message says how to fix it."""


class NodeReturnTypeError(ConfigurationError):
    """A node returned something other than a dict, a model or a usage tuple."""


class ResumeError(StromaError):
    """A resume cannot proceed as asked."""


class UnknownNodeError(ResumeError, KeyError):
    """A node id that the pipeline (or registry) does not contain."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointMissingError(ResumeError):
    """The checkpoint that a resume needs is not in the store."""


class ResumeMismatchError(ResumeError):
    """The pipeline or its schemas changed since the run's checkpoints were written."""


class RunLeasedError(ResumeError):
    """Another worker holds the lease on this run."""


class SchemaResolutionError(StromaError, TypeError):
    """A stored ``module:qualname`` does not name a schema registered in this process."""


class CheckpointDataError(StromaError):
    """A stored checkpoint payload is malformed, hostile, or no longer valid for its schema."""


class StoreUnavailableError(StromaError, ConnectionError):
    """A checkpoint store could not be reached. Classified RECOVERABLE: the node is retried."""


class NodeTimeoutError(StromaError, TimeoutError):
    """A node took longer than its ``node_timeouts`` entry; its result (if any) was discarded.
    A ``TimeoutError``, so it is RECOVERABLE by default."""


class RunFileError(StromaError):
    """A run file could not be read. ``path``, ``line`` and ``field`` say where."""

    def __init__(
        self, message: str, *, path: str = "", line: int | None = None, field: str | None = None
    ) -> None:
        where = path
        if line is not None:
            where += f", line {line}"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.line = line
        self.field = field


# -- published-API fidelity and configuration checks (issues 11 and 16) -------------------------


class MissingExtraError(ConfigurationError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    Also an ``ImportError``, as in the published package, so ``except ImportError`` still works.
    """


class InvalidUsageError(ConfigurationError):
    """A usage record with a negative (or NaN) token count, cost or latency."""


# -- checkpoint stores: fencing, commit-time checks, data errors ----------------------------


class LeaseLostError(RunLeasedError):
    """This worker's lease on a run was taken by another worker (its fencing token is stale):
    the store refused the commit atomically. Not worth retrying: the run belongs to the other
    worker now. ``run_id``, ``token`` (this worker's) and ``current`` (the store's) say which."""

    def __init__(
        self, message: str, *, run_id: str = "", token: int | None = None, current: int | None = None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.token = token
        self.current = current


class CheckpointEncodeError(ConfigurationError):
    """A node's output cannot be checkpointed (NaN/inf, over the load limit, bytes that are not
    UTF-8, lone surrogates). TERMINAL: retrying gives the same output. ``node_id``, ``field``
    and ``reason`` say what."""

    def __init__(self, message: str, *, node_id: str = "", field: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.node_id = node_id
        self.field = field
        self.reason = reason


class StoreDataError(ConfigurationError):
    """A store holds a value of the wrong kind under one of Stroma's keys (Redis ``WRONGTYPE``),
    or refuses a value Stroma sent (a NUL byte or an over-long id on PostgreSQL). TERMINAL:
    retrying gives the same answer. ``key`` names the key or id."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key
