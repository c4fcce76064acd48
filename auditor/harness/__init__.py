"""The verifier harness: the one part of pgolf-audit that executes anything, on the verifier's own machine.

- `data`: locate and validate the data a verifier mounts (shards, tokenizer, sidecar; official shard hashes).
- `rescore`: reload a quantized artifact in the reference format and rescore it with canonical byte accounting.
- `rerun`: run a submission's own train_gpt.py in a scratch copy under a hard timeout and keep its log.
- `cli`: `pgolf-audit verify ...`.

Results are attached to the Submission as ``sub.options.harness`` (plain JSON-able dicts; auditor.options) before `audit()` runs;
rules PG801 (rescore) and PG802 (rerun) read them and SKIP in a static audit, where no such results exist.
"""
