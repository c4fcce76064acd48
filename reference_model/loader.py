"""Distributed training-token loader over challenge shards.

Sampling follows the record's ShuffledSequenceLoader in kind: each epoch every shard gets a random phase in
[0, seq_len) and is cut into seq_len+1-token windows (input + shifted target) at that phase, and the windows are
visited in a random order without replacement. Unlike the record (one RNG and one shard subset per rank), the
order here is ONE global sequence drawn from `seed`, and a step's global batch is the next `batch_seqs` windows
of it, split between ranks and micro-steps by position. So the tokens a step trains on do not depend on the
number of GPUs or on gradient accumulation: a 1-GPU and a 2-GPU run with the same global batch see the same
data, which is what makes their loss curves comparable (tests/test_reference_train.py, bench_train --ddp).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pgolf_data.shards import read_shard, shard_files


class TokenLoader:
    def __init__(
        self,
        files: str | Sequence[str | Path],
        seq_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        paths = shard_files(files) if isinstance(files, str) else [Path(f) for f in files]
        if not paths:
            raise FileNotFoundError(f"no training shards match {files!r}")
        self.paths = paths
        self.shards = [read_shard(p) for p in paths]  # memory-mapped uint16
        self.seq_len = seq_len
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.device = torch.device(device)
        self.epoch = -1
        self._order = np.zeros((0, 2), dtype=np.int64)  # rows of (shard index, start token)
        self._pos = 0
        if not any(len(s) > seq_len for s in self.shards):
            raise ValueError(f"no shard holds more than seq_len={seq_len} tokens")

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.shards)

    def _new_epoch(self) -> None:
        self.epoch += 1
        rng = np.random.Generator(np.random.PCG64([self.seed, self.epoch]))
        rows = []
        for si, shard in enumerate(self.shards):
            n = len(shard)
            max_phase = min(self.seq_len - 1, max(0, n - self.seq_len - 1))
            phase = int(rng.integers(max_phase + 1)) if max_phase > 0 else 0
            count = (n - 1 - phase) // self.seq_len
            if count <= 0:
                continue
            starts = phase + np.arange(count, dtype=np.int64) * self.seq_len
            rows.append(np.stack([np.full(count, si, dtype=np.int64), starts], axis=1))
        order = np.concatenate(rows)
        self._order = order[rng.permutation(len(order))]
        self._pos = 0

    def _take(self, count: int) -> np.ndarray:
        out = []
        while count > 0:
            if self._pos >= len(self._order):
                self._new_epoch()
            got = self._order[self._pos : self._pos + count]
            self._pos += len(got)
            count -= len(got)
            out.append(got)
        return np.concatenate(out)

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        window = np.arange(self.seq_len + 1, dtype=np.int64)
        out = np.empty((len(rows), self.seq_len + 1), dtype=np.int64)
        for si in np.unique(rows[:, 0]):
            sel = rows[:, 0] == si
            out[sel] = self.shards[si][rows[sel, 1][:, None] + window]
        return torch.from_numpy(out)

    def next_step(
        self, batch_tokens: int, grad_accum_steps: int = 1
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches [(x, y)] * grad_accum_steps for the next global batch of batch_tokens."""
        global_seqs = batch_tokens // self.seq_len
        per_micro = global_seqs // (self.world_size * grad_accum_steps)
        if per_micro <= 0 or per_micro * self.world_size * grad_accum_steps != global_seqs:
            raise ValueError(
                f"batch of {global_seqs} sequences does not split into world_size={self.world_size} x "
                f"grad_accum={grad_accum_steps} equal micro-batches"
            )
        rows = self._take(global_seqs)
        per_rank = global_seqs // self.world_size
        mine = rows[self.rank * per_rank : (self.rank + 1) * per_rank]
        windows = self._read(mine)
        if self.device.type == "cuda":
            windows = windows.pin_memory().to(self.device, non_blocking=True)
        batches = []
        for m in range(grad_accum_steps):
            w = windows[m * per_micro : (m + 1) * per_micro]
            batches.append((w[:, :-1].contiguous(), w[:, 1:].contiguous()))
        return batches

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self._pos}

    def reset(self) -> None:
        """Back to the first batch (used after the compile warmup, like the record's fresh loader)."""
        self.epoch = -1
        self._order = np.zeros((0, 2), dtype=np.int64)
        self._pos = 0
