"""Rule registry: every `Rule` subclass with an id in any module of this package, discovered at import time.

Adding a rule is adding a class in a module here; nothing else needs editing. Ids are never reused.
"""

from __future__ import annotations

import importlib
import pkgutil

from rules.base import CATEGORIES, Case, Rule

__all__ = ["CATEGORIES", "Case", "Rule", "all_rules", "get_rule"]

_REGISTRY: dict[str, type[Rule]] | None = None


def _discover() -> dict[str, type[Rule]]:
    found: dict[str, type[Rule]] = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("_") or mod.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Rule) and obj is not Rule and obj.id:
                if obj.__module__ != module.__name__:
                    continue
                if obj.id in found and found[obj.id] is not obj:
                    raise RuntimeError(
                        f"duplicate rule id {obj.id}: {found[obj.id].__name__} and {obj.__name__}"
                    )
                found[obj.id] = obj
    return dict(sorted(found.items()))


def all_rules() -> list[type[Rule]]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _discover()
    return list(_REGISTRY.values())


def get_rule(rule_id: str) -> type[Rule] | None:
    key = rule_id.upper()
    for rule in all_rules():
        if rule.id == key or rule.name == rule_id.lower():
            return rule
    return None
