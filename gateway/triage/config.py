"""
Reading the triage rule files and place lists: YAML in, plain Python values out, with the line of
every key kept so that a mistake can be reported as ``FILE:LINE: KEY.PATH: what was expected``.

Nothing here knows what the rules mean; :mod:`gateway.triage.rules`,
:mod:`gateway.triage.normalise` and :mod:`gateway.triage.places` check the shapes they need with
the helpers of :class:`Document`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml


class TriageConfigError(Exception):
    """A rule file or place list is missing or malformed; the text names the file, line and key."""


Path_ = Tuple[Any, ...]


class Document:
    """
    One loaded YAML file: ``data`` is the plain value, ``lines`` maps each key path (a tuple of
    mapping keys and list indexes) to its 1-based line in ``path``.
    """

    def __init__(self, path: Path, data: Any, lines: Dict[Path_, int]):
        self.path = path
        self.data = data
        self.lines = lines

    def error(self, key_path: Path_, expected: str) -> TriageConfigError:
        """An error for the value at ``key_path`` (the nearest line known is used)."""
        line = None
        probe = tuple(key_path)
        while probe:
            if probe in self.lines:
                line = self.lines[probe]
                break
            probe = probe[:-1]
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        key = _dotted(key_path) or "(top level)"
        return TriageConfigError(f"{where}: {key}: {expected}")

    def get(self, key_path: Path_, kind: type, required: bool = True, default: Any = None) -> Any:
        """The value at ``key_path`` checked to be a ``kind``."""
        value: Any = self.data
        for i, key in enumerate(key_path):
            if isinstance(key, int) and isinstance(value, list):
                value = value[key]
                continue
            if not isinstance(value, dict):
                raise self.error(key_path[:i], "expected a mapping")
            if key not in value:
                if required:
                    raise self.error(key_path[:i] + (key,), f"missing (expected {_kind_name(kind)})")
                return default
            value = value[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise self.error(key_path, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def strings(self, key_path: Path_, required: bool = True) -> List[str]:
        """A list of non-empty strings at ``key_path``."""
        items = self.get(key_path, list, required=required, default=[])
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise self.error(key_path + (i,), f"expected a non-empty string, got {item!r}")
        return items

    def check_keys(self, key_path: Path_, allowed: Iterable[str]) -> None:
        """Refuse keys of the mapping at ``key_path`` that are not ``allowed`` (typos in rules)."""
        mapping = self.get(key_path, dict)
        allowed = tuple(allowed)
        for key in mapping:
            if key not in allowed:
                raise self.error(key_path + (key,), "unknown key; expected one of " + ", ".join(allowed))


def load(path: Path) -> Document:
    """Load one YAML file; a missing file or bad YAML raises :class:`TriageConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TriageConfigError(f"{path}: cannot be read: {e.strerror or e}") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise TriageConfigError(f"{path}{line}: (top level): not valid YAML: {getattr(e, 'problem', e)}") from e
    lines: Dict[Path_, int] = {}
    constructor = yaml.SafeLoader("")
    data = _plain(node, (), lines, constructor, path) if node is not None else None
    return Document(path, data, lines)


def load_dir(directory: Path, names: Optional[Iterable[str]] = None) -> List[Document]:
    """The given file ``names`` of ``directory`` (each required), or all its ``*.yaml`` files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TriageConfigError(f"{directory}: not a directory of rule files")
    if names is None:
        paths = sorted(directory.glob("*.yaml"))
        if not paths:
            raise TriageConfigError(f"{directory}: holds no *.yaml file")
    else:
        paths = [directory / name for name in names]
    return [load(p) for p in paths]


def _plain(node, key_path, lines, constructor, path):
    lines.setdefault(key_path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int)):
                raise TriageConfigError(
                    f"{path}:{key_node.start_mark.line + 1}: {_dotted(key_path) or '(top level)'}: "
                    f"keys must be strings, got {key!r}")
            if key in result:
                raise TriageConfigError(
                    f"{path}:{key_node.start_mark.line + 1}: {_dotted(key_path + (key,))}: duplicate key")
            lines[key_path + (key,)] = key_node.start_mark.line + 1
            result[key] = _plain(value_node, key_path + (key,), lines, constructor, path)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, key_path + (i,), lines, constructor, path) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def _dotted(key_path: Path_) -> str:
    out = ""
    for key in key_path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def _kind_name(kind) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_kind_name(k) for k in kind)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list", dict: "a mapping"}.get(kind, kind.__name__)
