"""The files ``baton new`` writes, as string templates (``string.Template``)."""
