"""Typed contracts checked at every node boundary.

Example::

    registry = ContractRegistry()
    registry.register(NodeContract(node_id="summarize", input_schema=Document, output_schema=Summary))
    summary = registry.validate_output("summarize", {"summary": "...", "word_count": 3})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from stroma._checked import CheckedModel, check_id
from stroma._schemas import remember_schema
from stroma.errors import ConfigurationError, StromaError, UnknownNodeError

__all__ = [
    "BoundaryValidator",
    "ContractRegistry",
    "ContractViolation",
    "NodeContract",
    "StepContract",
    "StepViolation",
    "UntypedState",
]

_MAX_LISTED_ERRORS = 5


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "__root__"


class ContractViolation(StromaError):
    """Data crossed a node boundary and did not match the node's schema.

    ``direction`` is ``"input"`` or ``"output"``; ``raw`` is the offending data; ``errors`` the
    pydantic error list. Classified TERMINAL by the built-in rules: a retry would return the same.
    """

    def __init__(self, node_id: str, direction: str, raw: Any, errors: list[dict[str, Any]]) -> None:
        self.node_id = node_id
        self.direction = direction
        self.raw = raw
        self.errors = errors
        listed = "; ".join(
            f"{_loc(tuple(e.get('loc', ())))}: {e.get('msg', '')}" for e in errors[:_MAX_LISTED_ERRORS]
        )
        more = len(errors) - _MAX_LISTED_ERRORS
        if more > 0:
            listed += f"; (+{more} more)"
        super().__init__(f"Contract violation for '{node_id}' ({direction}): {listed}")

    @property
    def field_paths(self) -> tuple[str, ...]:
        """Dotted paths of the fields that failed, without their values."""
        return tuple(_loc(tuple(e.get("loc", ()))) for e in self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node_id, self.direction, self.raw, self.errors))


class NodeContract(CheckedModel):
    """The input and output schema of one node."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    node_id: str
    input_schema: type[BaseModel]
    output_schema: type[BaseModel]

    @field_validator("node_id")
    @classmethod
    def _valid_id(cls, node_id: str) -> str:
        return check_id("node id", node_id)

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _remember(cls, schema: type[BaseModel]) -> type[BaseModel]:
        remember_schema(schema)
        return schema


class UntypedState(BaseModel):
    """The state of a step without a contract (or a ``parallel()`` group's merged output):
    any JSON fields, kept as given."""

    model_config = ConfigDict(extra="allow")


remember_schema(UntypedState)

Validator = Callable[[NodeContract, str, Any], BaseModel]
"""What :class:`ContractRegistry` accepts as a validator: ``(contract, direction, raw) -> model``."""


def validate_boundary(contract: NodeContract, direction: str, raw: Any) -> BaseModel:
    """Validate ``raw`` against one side (``"input"`` or ``"output"``) of ``contract``.

    A model that already is an instance of the schema is returned as is (no re-validation).
    """
    if direction == "input":
        schema = contract.input_schema
    elif direction == "output":
        schema = contract.output_schema
    else:
        raise ConfigurationError(f"direction {direction!r} must be 'input' or 'output'")
    if type(raw) is schema:
        return raw
    try:
        if isinstance(raw, BaseModel):
            if isinstance(raw, schema):
                return raw
            return schema.model_validate(raw.model_dump())
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise ContractViolation(
            contract.node_id,
            direction,
            raw,
            [dict(e) for e in exc.errors(include_url=False)],
        ) from None


class BoundaryValidator:
    """Validates data crossing a node boundary (the published API)::

        model = BoundaryValidator()(contract, "output", {"summary": "..."})

    Returns the validated model or raises :class:`ContractViolation`.
    """

    def __call__(self, contract: NodeContract, direction: str, raw: Any) -> BaseModel:
        """Validate ``raw`` against ``contract``'s ``direction`` (``"input"``/``"output"``) schema."""
        return validate_boundary(contract, direction, raw)


class ContractRegistry:
    """Contracts by node id."""

    def __init__(self, validator: Validator = validate_boundary) -> None:
        self._contracts: dict[str, NodeContract] = {}
        self._validator = validator

    def register(self, contract: NodeContract) -> None:
        """Add (or replace) the contract for ``contract.node_id``."""
        self._contracts[contract.node_id] = contract

    def get(self, node_id: str) -> NodeContract:
        """The contract of ``node_id``; raises UnknownNodeError (a KeyError) naming known ids."""
        try:
            return self._contracts[node_id]
        except KeyError:
            known = ", ".join(sorted(self._contracts)) or "none registered"
            raise UnknownNodeError(
                f"no contract registered for node '{node_id}' (registered: {known}); "
                "register one with registry.register(NodeContract(...)) or @runner.node(...)"
            ) from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._contracts

    def __len__(self) -> int:
        return len(self._contracts)

    @property
    def contracts(self) -> Mapping[str, NodeContract]:
        """A read-only view of every registered contract."""
        return dict(self._contracts)

    def validate_input(self, node_id: str, raw: Any) -> BaseModel:
        """Validate data entering ``node_id``; raises ContractViolation."""
        return self._validator(self.get(node_id), "input", raw)

    def validate_output(self, node_id: str, raw: Any) -> BaseModel:
        """Validate data leaving ``node_id``; raises ContractViolation."""
        return self._validator(self.get(node_id), "output", raw)


StepContract = NodeContract
StepViolation = ContractViolation
