"""``yaml.safe_load`` with a bound on what aliases expand to (billion laughs) and no recursive aliases.

``safe_load`` parses aliases by reference, so a 600-byte file of nested aliases (``&a [*b, *b, ...]``)
loads quickly, but anything that walks the result (validation, ``deepcopy``, JSON or YAML dumps)
visits each shared node once per path to it: 10**9 nodes, minutes and gigabytes. Plain aliases are
legitimate (the built-in training recipes share an ``overrides`` mapping), so they are allowed up to
:data:`MAX_NODES` nodes after expansion, counted on the parsed node graph before anything is
constructed; recursive ones (``&a [*a]``) are refused.
"""

from __future__ import annotations

from typing import Any

import yaml

#: nodes a document may expand to, aliases counted at every place they are used
MAX_NODES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class AliasBombError(yaml.YAMLError):
    """A document whose aliases expand beyond :data:`MAX_NODES` nodes, or refer to themselves."""


def safe_load(stream: str | bytes, *, max_nodes: int | None = None) -> Any:
    """Like :func:`yaml.safe_load`, but raises :class:`AliasBombError` (a ``yaml.YAMLError``) when the
    document expands to more than ``max_nodes`` (default :data:`MAX_NODES`) nodes."""
    loader = _Loader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, MAX_NODES if max_nodes is None else max_nodes)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes under ``root`` with every alias expanded, computed once per shared node (no expansion)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > limit:
                mark = node.start_mark
                raise AliasBombError(f"aliases expand to more than {limit} nodes (at line {mark.line + 1}, "
                                     f"column {mark.column + 1}); write the values out or use fewer aliases")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            mark = node.start_mark
            raise AliasBombError(f"a recursive alias (a node that contains itself) at line {mark.line + 1}, "
                                 f"column {mark.column + 1}")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []
