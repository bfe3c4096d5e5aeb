"""The wire next to the generated stubs (``baton.v1``): channel options and limits, and the
domain <-> protobuf conversions that every role shares."""

__all__ = [
    "channel",
    "serde",
]
