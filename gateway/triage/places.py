"""
The gazetteer: place names of the service area matched in a message's words.

Each ``*.yaml`` file of a places directory lists ``kecamatan`` (districts), each with its
``desa`` (villages and kelurahan), and ``landmarks``; every place has a ``name``, optional
``aliases`` (other spellings), optional ``lat``/``lon`` (approximate; a village or landmark
without them takes its district's point, anything else has None) and
``ambiguous: true`` when the name is also an ordinary word (``Karangan``, ``Sandaran``): such a
name only counts after ``di``, ``ke``, ``desa``, ``kecamatan`` and the like.

Names go through the same normalisation as the message (squeezed letters, lower case), and their
words join the vocabulary misspellings are corrected to, so ``sanggata``, ``sangata utara`` and
``bengalonn`` are found. When several places are named, the most specific wins (a landmark over a
village over a town over a district), then the first named.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from gateway.message import Location
from gateway.triage.config import Document, TriageConfigError, load_dir
from gateway.triage.normalise import squeeze_phrase
from gateway.triage.phrases import PhraseIndex

_RANK = {"landmark": 4, "desa": 3, "town": 2, "kecamatan": 1}
_CONTEXT_WORDS = frozenset(squeeze_phrase(
    "di ke dari desa kampung kecamatan kelurahan kel wilayah daerah sekitar dekat arah menuju jalan sampai"))


@dataclasses.dataclass(frozen=True)
class Place:
    name: str
    kind: str
    lat: Optional[float]
    lon: Optional[float]
    within: Optional[str] = None
    ambiguous: bool = False

    @property
    def label(self) -> str:
        if self.within and self.within != self.name:
            return f"{self.name}, {self.within}"
        return self.name

    def location(self) -> Location:
        """The :class:`Location` of this place (made once: a Location is immutable)."""
        location = self.__dict__.get("_location")
        if location is None:
            location = Location(lat=self.lat, lon=self.lon, name=self.label, source="gazetteer")
            object.__setattr__(self, "_location", location)
        return location


class Gazetteer:
    """Place names compiled into a phrase index; :meth:`find` is the look-up."""

    def __init__(self, places: Iterable[Place], names: Iterable[Sequence[str]]):
        self.places = tuple(places)
        self._index = PhraseIndex()
        for place, place_names in zip(self.places, names):
            for name in place_names:
                words = squeeze_phrase(name)
                if words:
                    self._index.add(words, place)
        self._index.freeze()

    def vocabulary(self) -> Iterable[str]:
        return self._index.words()

    def find(self, tokens: Sequence[str]) -> Optional[Place]:
        """The most specific place named in ``tokens``, or None."""
        best = None
        best_rank = 0
        for start, _end, places in self._index.scan(tokens):
            for place in places:
                if place.ambiguous and (start == 0 or tokens[start - 1] not in _CONTEXT_WORDS):
                    continue
                rank = _RANK[place.kind]
                if rank > best_rank:
                    best, best_rank = place, rank
        return best


def load_places(directory: Path) -> Gazetteer:
    """Every ``*.yaml`` place list of ``directory``, checked; errors name file, line and key."""
    places: List[Place] = []
    names: List[List[str]] = []
    for doc in load_dir(Path(directory)):
        _read(doc, places, names)
    if not places:
        raise TriageConfigError(f"{directory}: lists no place")
    districts = {p.name: p for p in places if p.kind == "kecamatan" and p.lat is not None}
    places = [dataclasses.replace(p, lat=districts[p.within].lat, lon=districts[p.within].lon)
              if p.lat is None and p.within in districts else p for p in places]
    return Gazetteer(places, names)


def _read(doc: Document, places: List[Place], names: List[List[str]]) -> None:
    doc.get((), dict)
    doc.check_keys((), ("region", "coordinates", "kecamatan", "towns", "landmarks"))
    for i, _ in enumerate(doc.get(("kecamatan",), list, required=False, default=[])):
        base = ("kecamatan", i)
        district = _place(doc, base, "kecamatan", None, places, names, extra=("desa",))
        for j, _ in enumerate(doc.get(base + ("desa",), list, required=False, default=[])):
            _place(doc, base + ("desa", j), "desa", district, places, names)
    for kind, key in (("town", "towns"), ("landmark", "landmarks")):
        for i, _ in enumerate(doc.get((key,), list, required=False, default=[])):
            _place(doc, (key, i), kind, None, places, names, extra=("within",))


def _place(doc, key, kind, within, places, names, extra=()) -> str:
    value = doc.get(key, (dict, str))
    if isinstance(value, str):
        name, aliases, lat, lon, ambiguous = value, [], None, None, False
    else:
        doc.check_keys(key, ("name", "aliases", "lat", "lon", "ambiguous", "note") + tuple(extra))
        name = doc.get(key + ("name",), str)
        aliases = doc.strings(key + ("aliases",), required=False)
        lat = doc.get(key + ("lat",), float, required=False)
        lon = doc.get(key + ("lon",), float, required=False)
        if (lat is None) != (lon is None):
            raise doc.error(key + ("lon" if lat is None else "lat",), "lat and lon go together")
        if lat is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise doc.error(key + ("lat",), f"expected a latitude and longitude, got {lat}, {lon}")
        ambiguous = doc.get(key + ("ambiguous",), bool, required=False, default=False)
        if "within" in extra:
            within = doc.get(key + ("within",), str, required=False)
    if not squeeze_phrase(name):
        raise doc.error(key, f"place name {name!r} has no words")
    places.append(Place(name, kind, lat, lon, within, ambiguous))
    names.append([name] + list(aliases))
    return name
