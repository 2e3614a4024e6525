"""Exceptions of progvc. Every error a user can cause is a :class:`ProgvcError`, which the
command line turns into one line on stderr and exit code 2."""


class ProgvcError(Exception):
    """Base class of every user-facing progvc error."""


class BitstreamError(ProgvcError, ValueError):
    """A stream is truncated, corrupt, of another format version, or holds absurd values."""


class ModelMismatchError(BitstreamError):
    """A stream was made by another model than the one asked to decode it."""


class VideoReadError(ProgvcError, OSError):
    """A video or image could not be read."""


class WeightsNotFoundError(ProgvcError, FileNotFoundError):
    """Pretrained weights (LPIPS, DISTS, I3D, a codec checkpoint) are missing."""


class ConfigError(ProgvcError, ValueError):
    """Components that do not fit together, or a bad setting."""


class LimitExceededError(BitstreamError):
    """A stream asks the decoder for more than its :class:`~progvc.codec.limits.DecodeLimits` allow."""
