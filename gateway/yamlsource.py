"""
YAML that remembers where each value came from, so that a configuration error can name the file
and line of the key at fault.
"""

from __future__ import annotations

from typing import Any, Dict

import yaml


class LineDict(dict):
    """A mapping from YAML; ``line`` is where it starts, ``lines[key]`` where each key is (1-based)."""

    line: int = 0
    lines: Dict[Any, int]


class LineList(list):
    """A sequence from YAML; ``line`` is where it starts, ``lines[i]`` where each item is (1-based)."""

    line: int = 0
    lines: Dict[int, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader, node):
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = {i: child.start_mark.line + 1 for i, child in enumerate(node.value)}
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load(text: str) -> Any:
    """
    Parse YAML ``text`` into plain values whose mappings are :class:`LineDict` and sequences
    :class:`LineList`. Raises ``yaml.YAMLError`` (with ``problem_mark``) on bad YAML or a
    duplicate key.
    """
    return yaml.load(text, Loader=_Loader)
