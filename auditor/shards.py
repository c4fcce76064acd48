"""Re-export of `pgolf_data.shards` for code written before the leaf package existed."""

from pgolf_data.shards import *  # noqa: F401,F403
from pgolf_data.shards import HEADER_BYTES, ShardError, ShardHeader, truncated_length  # noqa: F401
