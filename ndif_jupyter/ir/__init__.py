"""The intermediate representation every path speaks: the graph as plain data, source lines, and a run's result.

Tracing produces it, execution runs it, the protocol encodes it. It imports nothing else of this package.
"""

from .graph import (
    CONDITION,
    CONSTANT_TYPES,
    METADATA_KWARGS,
    Graph,
    GraphKind,
    Invoke,
    Node,
    Ref,
    iter_refs,
    node_condition,
    node_refs,
    operation_kwargs,
)
from .result import ExecutionResult
from .source import Source

__all__ = [
    "CONDITION",
    "CONSTANT_TYPES",
    "METADATA_KWARGS",
    "ExecutionResult",
    "Graph",
    "GraphKind",
    "Invoke",
    "Node",
    "Ref",
    "Source",
    "iter_refs",
    "node_condition",
    "node_refs",
    "operation_kwargs",
]
