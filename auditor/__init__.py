"""pgolf-audit: compliance auditor and verifier for OpenAI Parameter Golf submissions."""

__version__ = "0.1.0"
# Bumped whenever a rule is added, removed, or changes what it reports; recorded in every report.
RULESET_VERSION = "2026.11.22"
