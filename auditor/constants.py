"""Rule data: limits, canonical counts and ruling dates, each with its source (shared/docs/rules.md section).

Rule code reads these; no literal of the challenge's numbers should appear anywhere else.
"""

from __future__ import annotations

ARTIFACT_CAP_BYTES = 16_000_000  # decimal, not 16 MiB (README FAQ; rules.md §0, §F)
TRAIN_LIMIT_MS = 600_000  # 10 min on 8xH100 SXM (README; rules.md §A.13)
EVAL_LIMIT_MS = 600_000  # a further 10 min for evaluation (README FAQ; rules.md §A.13)
RECORD_MARGIN_NATS = 0.005  # written rule (README "Submission Process"; rules.md §A.12)
RECORD_P_WRITTEN = 0.01  # written rule
RECORD_P_APPLIED = 0.25  # applied chronological-frontier cutoff (PR #1902, PR #1899/#1900)
SHARD_MAGIC = 20240520  # shard header[0] (data/download_hf_docs_and_tokenize.py; rules.md §C)
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
