"""The ordering lab: measures in simulation how much site order matters and who picks it well.

Modules: ``batched`` (many orders trained at once with the sites' SGD), ``oracle`` (every
order's accuracy, percentiles, the order/noise ratio), ``baselines`` (FedAvg through
Flower's aggregation, pooled training), ``runner`` (strategies driven as the coordinator
drives them), ``cells`` (the grids and their cells), ``grid`` (trials, records),
``plan_cell`` (one cell from a run plan and the sites' own data) and ``report`` (JSON,
markdown, SVG).
"""

__all__ = [
    "baselines",
    "batched",
    "cells",
    "grid",
    "oracle",
    "parallel",
    "plan_cell",
    "report",
    "runner",
    "stats",
    "summary",
]
