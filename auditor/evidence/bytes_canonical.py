"""Re-export of `pgolf_data.bytes` (canonical byte accounting) for code written before the leaf package existed;
`python -m auditor.evidence.bytes_canonical` keeps working."""

from pgolf_data.bytes import *  # noqa: F401,F403
from pgolf_data.bytes import main

if __name__ == "__main__":
    raise SystemExit(main())
