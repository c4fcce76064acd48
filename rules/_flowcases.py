"""Small record-shaped scripts shared by the embedded cases of the flow rules (eval_io, val_leakage).

`record(...)` fills a minimal but complete record shape: train shards -> training loop with updates -> int8-ish
save + zlib -> reload -> evaluation on val shards. Each rule's cases splice in the construct under test.
"""

from __future__ import annotations

_TEMPLATE = """\
import glob, io, os, subprocess, zlib
import numpy as np
import torch
import torch.nn.functional as F

DATA = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
TRAIN_FILES = os.path.join(DATA, "fineweb_train_*.bin")
VAL_FILES = os.path.join(DATA, "fineweb_val_*.bin")
{flags}

def load_tokens(pattern):
    files = sorted(glob.glob(pattern))
    return torch.cat([torch.from_numpy(np.fromfile(f, dtype=np.uint16).astype(np.int64)) for f in files])


def evaluate(model, tokens):
    with torch.no_grad():
        logits = model(tokens[:-1])
        return F.cross_entropy(logits, tokens[1:]).item()
{helpers}

def main():
    train_tokens = load_tokens(TRAIN_FILES)
    model = torch.nn.Embedding(1024, 1024)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
{setup}
    for step in range(100):
        x = train_tokens[step * 64:(step + 1) * 64 + 1]
        loss = F.cross_entropy(model(x[:-1]), x[1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
{after_train}
    buf = io.BytesIO()
    torch.save({artifact}, buf)
    blob = zlib.compress(buf.getvalue())
    with open("final_model.int8.ptz", "wb") as f:
        f.write(blob)
    model.load_state_dict(torch.load(io.BytesIO(zlib.decompress(blob))))
    val_tokens = load_tokens(VAL_FILES)
{eval}
    print(f"final_int8_zlib_roundtrip_exact val_loss:{{val_loss:.8f}}")


if __name__ == "__main__":
    main()
"""


def record(
    flags: str = "",
    helpers: str = "",
    setup: str = "",
    after_train: str = "",
    artifact: str = "model.state_dict()",
    eval: str = "    val_loss = evaluate(model, val_tokens)",
) -> str:
    return _TEMPLATE.format(
        flags=flags, helpers=helpers, setup=setup, after_train=after_train, artifact=artifact, eval=eval
    )


def line_of(code: str, marker: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `marker` (cases state the expected line this way)."""
    seen = 0
    for i, text in enumerate(code.splitlines(), 1):
        if marker in text:
            seen += 1
            if seen == nth:
                return i
    raise ValueError(f"marker {marker!r} not in case code")
