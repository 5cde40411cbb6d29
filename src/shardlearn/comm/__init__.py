"""Communication: shard-ordered reduction and payload accounting."""

from .accounting import payload_nbytes
from .reduce import add, ordered_reduce

__all__ = ["add", "ordered_reduce", "payload_nbytes"]
