"""Run options of one audit, typed: what the command line (or the verifier) adds to a submission's own files.

Rules read them as `ctx.submission.options.<field>`; embedded rule Cases give them as a mapping, converted by
`AuditOptions.from_mapping`, which refuses unknown keys so a misspelt option cannot silently do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class AuditOptions:
    # PG751: the previous record, as a folder to read its logs from, or its per-seed val_loss values "v1,v2,...".
    reference: str | None = None
    reference_values: str | None = None
    # `verify` results (JSON-able dicts): "data" (the mounted data report), "rescore" [..] for PG801,
    # "rerun" [..] for PG802. Empty in a static audit.
    harness: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> AuditOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(
                f"unknown audit option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        opts = cls(**{k: v for k, v in values.items() if k != "harness"})  # type: ignore[arg-type]
        harness = values.get("harness")
        if harness is not None:
            if not isinstance(harness, Mapping):
                raise TypeError("audit option 'harness' must be a mapping")
            opts.harness = dict(harness)
        return opts
