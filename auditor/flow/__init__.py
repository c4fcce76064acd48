"""Shared flow layer: whole-program call graph, gates, reachability, phases and data-flow taint (see API.md)."""

from auditor.flow.consts import UNKNOWN, RunCommand
from auditor.flow.program import CallSite, ClassInfo, EntryEvent, Func, Gate, Program, Reach, program_of

__all__ = [
    "UNKNOWN",
    "CallSite",
    "ClassInfo",
    "EntryEvent",
    "Func",
    "Gate",
    "Program",
    "Reach",
    "RunCommand",
    "program_of",
]
