"""The errors fusegraph raises for user mistakes: one type each, a message naming where and what to change."""


class FusegraphError(Exception):
    """Base of every error fusegraph raises on purpose."""


class GraphError(FusegraphError, ValueError):
    """A malformed model or graph: the message names the layer/node and what to change."""


class InputError(FusegraphError, ValueError):
    """A tensor handed to a model that does not match what the model expects."""


class CheckpointError(FusegraphError, ValueError):
    """A file that is not a fusegraph save, is damaged, or a state that does not fit what it is loaded into."""


class CacheError(FusegraphError, PermissionError):
    """A kernel cache folder fusegraph refuses to use (owned by someone else, or writable by others)."""


class DistributedError(FusegraphError, RuntimeError):
    """A data-parallel run that cannot go on: not in a process group, ranks that differ, or a rank that
    stopped (died, raised, or missed the process group's timeout) while the others waited for it."""
