"""Data formats shared by the auditor and the reference model: the challenge's token shards and its canonical byte
accounting. A leaf package: it imports neither `auditor` nor `reference_model`, so both can depend on it without
depending on each other."""
