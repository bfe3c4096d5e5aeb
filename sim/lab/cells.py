"""The lab's grids: the strategies compared, the cells, the named grids, the remedies, and
the run plan of a cell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from baton.plan import ModelSection, RunPlan, RunSection, TaskSection, TrainingSection
from sim.lab.runner import published_profiles
from sim.tasks import Federation, Partition

STRATEGIES: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    ("fixed", "fixed", {}),
    ("random", "random", {}),
    ("reshuffle", "reshuffle", {}),
    ("by_size:ascending", "by_size", {}),
    ("by_size:descending", "by_size", {"direction": "descending"}),
    ("typicality", "typicality", {}),
    ("path:max", "path", {}),
    ("path:min", "path", {"objective": "min"}),
    ("greedy_loss", "greedy_loss", {}),
    ("learned", "learned", {}),
)
"""(label, strategy name, options) of every strategy the lab compares."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Cell:
    """One setting of the grid."""

    dataset: str
    """``breast_cancer``, ``digits`` or ``wine``."""
    partition: Partition
    """How the data is split across sites."""
    k: int
    """Number of sites."""
    local_epochs: int
    """Local epochs per hop."""
    cycles: int
    """Cycles per run."""

    @property
    def partition_label(self) -> str:
        """``dirichlet-0.1``, ``quantity-0.5``, ...: the partition as the records name it."""
        return f"{self.partition.kind}-{self.partition.alpha:g}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Grid:
    """A set of cells, each run over the same partition seeds and repetitions."""

    name: str
    """``smoke``, ``reduced``, ``acceptance`` or ``full`` (each also ``*-remedies``)."""
    cells: tuple[Cell, ...]
    """The settings."""
    seeds: tuple[int, ...]
    """Partition seeds (trials) per cell."""
    repetitions: int
    """Repetitions per order; repetition ``r`` uses run seed ``r`` for every order."""
    hidden: tuple[int, ...] = (32,)
    """Hidden layer widths of the MLP."""
    probe_budget_per_site: int = 2
    """Probe runs a strategy that plans probes (``ordering.ProbePlanner``) gets per
    site. A probe never uses the run seed of the run it informs: repetition ``j`` of a
    probe for repetition ``r`` reads the oracle's run with seed ``(r + 1 + j) % R``
    while ``j < R - 1`` (``R`` repetitions), and beyond that, or for an order the oracle
    did not train, is simulated with a seed no final run uses."""
    strategies: tuple[tuple[str, str, Mapping[str, Any]], ...] = field(default=STRATEGIES)
    """Strategies compared."""
    budget_rows: tuple[tuple[str, int, int], ...] = ()
    """``(label, probe runs per site, largest K)``: extra rows of the default ``learned``
    strategy with a larger probe budget, for its cost against its gain. They run in
    cells of at most that many sites: beyond the orders the oracle trained, each probe
    is trained alone, which at K = 7 (720 of 5040 orders sampled) would dominate the
    grid's time."""
    remedies: Mapping[str, Any] = field(default_factory=dict)
    """Forgetting remedies turned on in every cell: ``TrainingSection`` fields and their
    values (``lr_schedule``, ``lr_min_ratio``, ``proximal_mu``, ``proportional_steps``).
    With ``proportional_steps`` the reference size is the mean of the sites' published
    training-set sizes. Empty: plain SGD."""

    transfer_factor: int = 1
    """More cycles with fewer local epochs at equal compute: a cell whose local epochs
    this factor divides runs ``cycles * factor`` cycles of ``local_epochs / factor``
    epochs (the records show the cycles and epochs actually run); others run as given."""

    def __post_init__(self) -> None:
        if self.transfer_factor < 1:
            raise ValueError(f"'transfer_factor' must be at least 1, not {self.transfer_factor}")

    @property
    def remedies_label(self) -> str:
        """``none``, or the remedies as ``key=value`` pairs joined by ``+``."""
        items = sorted(self.remedies.items())
        if self.transfer_factor > 1:
            items.append(("transfer_factor", self.transfer_factor))
        return "+".join(f"{k}={v}" for k, v in items) if items else "none"

    def effective(self, cell: Cell) -> Cell:
        """The cell as run, after :attr:`transfer_factor`."""
        f = self.transfer_factor
        if f == 1 or cell.local_epochs % f:
            return cell
        return replace(cell, cycles=cell.cycles * f, local_epochs=cell.local_epochs // f)


def _cells(
    datasets: Sequence[str],
    partitions: Sequence[Partition],
    ks: Sequence[int],
    epochs: Sequence[int],
    cycles: Sequence[int],
) -> tuple[Cell, ...]:
    return tuple(
        Cell(dataset=d, partition=p, k=k, local_epochs=e, cycles=c)
        for d in datasets
        for p in partitions
        for k in ks
        for e in epochs
        for c in cycles
    )


def _dirichlet(alpha: float) -> Partition:
    return Partition(kind="dirichlet", alpha=alpha, min_train_examples=8)


GRIDS: dict[str, Grid] = {
    "smoke": Grid(
        name="smoke",
        cells=_cells(["wine"], [_dirichlet(0.5)], [3], [1], [1]),
        seeds=(0,),
        repetitions=2,
    ),
    "reduced": Grid(
        name="reduced",
        cells=_cells(["digits"], [_dirichlet(0.1), _dirichlet(0.5)], [3, 5], [5], [1, 3]),
        seeds=(0, 1, 2),
        repetitions=2,
    ),
    # The order-sensitive acceptance cells: digits, label skew, 5 local epochs.
    "acceptance": Grid(
        name="acceptance",
        cells=_cells(["digits"], [_dirichlet(0.1), _dirichlet(0.5)], [3, 5, 7], [5], [1, 3]),
        seeds=tuple(range(10)),
        repetitions=4,
        budget_rows=(("learned:8/site", 8, 5),),
    ),
    "full": Grid(
        name="full",
        cells=_cells(
            ["breast_cancer", "digits", "wine"],
            [
                _dirichlet(0.1),
                _dirichlet(0.5),
                _dirichlet(1.0),
                Partition(kind="quantity", alpha=0.5, min_train_examples=8),
            ],
            [3, 5, 7],
            [1, 5],
            [1, 3],
        ),
        seeds=tuple(range(10)),
        repetitions=4,
    ),
}


REMEDIES: Mapping[str, Any] = {
    "lr_schedule": "cyclical",
    "lr_min_ratio": 0.5,
    "proximal_mu": 0.1,
}
"""The remedies of the ``*-remedies`` grids: a cyclical learning rate falling to half
along each cycle and a proximal pull toward each hop's incoming weights; those grids also
hand the model on 5 times as often (``transfer_factor``). Proportional steps are left
out: with local epochs the steps are already proportional to size. Chosen on the reduced
grid (15 cycles of 1 epoch, 10 partition seeds): a fall to a tenth, or any decay across
cycles (``cycle_decay``), left the model undertrained (98.8-99.0% of centralized against
99.7% with half)."""

for _name in ("smoke", "reduced", "acceptance", "full"):
    GRIDS[f"{_name}-remedies"] = replace(
        GRIDS[_name], name=f"{_name}-remedies", remedies=dict(REMEDIES), transfer_factor=5
    )


def lab_plan(
    cell: Cell, grid: Grid, sites: tuple[str, ...], federation: Federation | None = None
) -> RunPlan:
    """The run plan of a cell: an MLP, plain SGD (no logit adjustment), the cell's epochs,
    and the grid's remedies.

    Raises:
        ValueError: The grid asks for ``proportional_steps`` and no ``federation`` is
            given to take the mean published size from.
    """
    remedies = dict(grid.remedies)
    if remedies.get("proportional_steps") and "reference_examples" not in remedies:
        if federation is None:
            raise ValueError("proportional steps need the federation's published sizes")
        sizes = [p.num_examples for p in published_profiles(federation).values()]
        remedies["reference_examples"] = max(1, round(sum(sizes) / len(sizes)))
    return RunPlan(
        run=RunSection(name="lab", sites=sites, cycles=cell.cycles, seed=0),
        model=ModelSection(name="mlp", args={"hidden": list(grid.hidden)}),
        task=TaskSection(dataset=cell.dataset),
        training=TrainingSection(
            optimizer="sgd",
            lr=0.05,
            momentum=0.9,
            batch_size=32,
            local_epochs=cell.local_epochs,
            logit_adjustment=False,
            **remedies,
        ),
    )
