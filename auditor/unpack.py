"""Static unpacking of `exec(<codec>.decompress(<b85/b64...>.decode("...")))` shims, without executing anything.

INTERFACE (owned by the unpacking work; this version only passes plain files through):
    unpack_source(path, text) -> UnpackOutcome
      .units    all CodeUnits for this file: the shipped text first, then each decoded layer, innermost last
      .layers   one UnpackedLayer per decoded layer
      .problems (line, message) for shims that could not be decoded (callers turn them into WARN findings)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditor.facts import CodeUnit
from auditor.findings import UnpackedLayer


@dataclass
class UnpackOutcome:
    units: list[CodeUnit] = field(default_factory=list)
    layers: list[UnpackedLayer] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


def unpack_source(path: str, text: str) -> UnpackOutcome:
    return UnpackOutcome(units=[CodeUnit(path=path, name=path, text=text)])
