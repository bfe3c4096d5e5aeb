"""Synthetic clinical notes of four departments, generated from templates, written per site.

SYNTHETIC: no note here is, or comes from, a real patient record. Each department's notes
come from its own templates and word lists (:data:`STYLES`), so the departments differ in
vocabulary, abbreviations and layout, as real departments' notes do:

- ``cardiology``: terse progress notes (``p/w CP``, ``LVEF 35%``, ``trop``, drug doses);
- ``oncology``: treatment-cycle notes (``C3D1 FOLFOX``, ``ECOG 1``, toxicity grades);
- ``radiology``: reports in capitalised sections (``FINDINGS:``, ``IMPRESSION:``);
- ``emergency``: triage notes (``ESI 2``, ``GCS 15``, ``BIBA``, vital signs, disposition).

:func:`write_department` lays a department out as the ``causal_lm_finetune`` task reads a
site (:mod:`baton.ml.llm.data`): ``schema.json``, ``train.jsonl`` and ``val.jsonl``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from baton.errors import ConfigError

__all__ = ["DEPARTMENTS", "STYLES", "department_texts", "write_department"]

_Note = Callable[[random.Random], str]


def _pick(rng: random.Random, words: tuple[str, ...]) -> str:
    return rng.choice(words)


def _cardiology(rng: random.Random) -> str:
    hx = _pick(rng, ("HTN", "DM2", "HLD", "CAD s/p PCI", "AF on apixaban", "CKD3", "prior CABG"))
    sx = _pick(rng, ("CP", "SOB", "palpitations", "syncope", "orthopnea", "DOE", "PND"))
    ecg = _pick(
        rng, ("NSR", "AF with RVR", "STE in II, III, aVF", "TWI V1-V4", "LBBB", "sinus brady")
    )
    plan = _pick(
        rng,
        (
            "ASA 325 mg, heparin gtt, cath lab",
            "metoprolol 25 mg BID, repeat trop in 3h",
            "furosemide 40 mg IV, daily weights",
            "TTE, telemetry, cardiology f/u",
            "rate control, CHA2DS2-VASc 4, start apixaban",
        ),
    )
    return (
        f"{rng.randint(42, 88)}{_pick(rng, ('M', 'F'))} w/ hx {hx} p/w {sx} x{rng.randint(1, 5)}d. "
        f"ECG: {ecg}. Trop {rng.randint(4, 900)} ng/L, BNP {rng.randint(40, 2400)}. "
        f"Echo LVEF {rng.randint(20, 65)}%. A/P: {_pick(rng, ('NSTEMI', 'ACS r/o', 'HFrEF'))}; "
        f"{plan}."
    )


def _oncology(rng: random.Random) -> str:
    regimen = _pick(
        rng, ("FOLFOX", "carboplatin/paclitaxel", "pembrolizumab", "AC-T", "R-CHOP", "FOLFIRI")
    )
    dx = _pick(
        rng,
        (
            "metastatic colorectal adenocarcinoma",
            "stage IIIA NSCLC",
            "triple-negative breast cancer",
            "DLBCL",
            "pancreatic adenocarcinoma",
        ),
    )
    tox = _pick(
        rng, ("neutropenia", "mucositis", "peripheral neuropathy", "fatigue", "nausea", "rash")
    )
    resp = _pick(rng, ("partial response", "stable disease", "progressive disease"))
    return (
        f"Dx: {dx}. Seen for C{rng.randint(1, 8)}D{_pick(rng, ('1', '8', '15'))} {regimen}. "
        f"ECOG {rng.randint(0, 2)}. ANC {rng.randint(5, 60) / 10:.1f}, Plt {rng.randint(60, 350)}, "
        f"Hb {rng.randint(80, 140) / 10:.1f}. Toxicity: grade {rng.randint(1, 3)} {tox}. "
        f"Restaging CT: {resp} per RECIST 1.1. Plan: "
        f"{_pick(rng, ('proceed with cycle', 'dose reduce 20%', 'hold treatment one week'))}, "
        f"{_pick(rng, ('G-CSF support', 'antiemetics', 'tumour board review'))}."
    )


def _radiology(rng: random.Random) -> str:
    exam = _pick(rng, ("CT CHEST", "MRI BRAIN", "CT ABDOMEN/PELVIS", "CXR PA/LAT", "US RUQ"))
    contrast = _pick(rng, ("WITH IV CONTRAST", "WITHOUT CONTRAST", "WITH AND WITHOUT CONTRAST"))
    finding = _pick(
        rng,
        (
            "There is a {n} mm spiculated nodule in the right upper lobe.",
            "No acute intracranial haemorrhage, mass effect or midline shift.",
            "Mild hepatic steatosis. The gallbladder wall measures {n} mm.",
            "Small left pleural effusion with adjacent atelectasis.",
            "A {n} mm hypodense lesion in segment VI, too small to characterise.",
        ),
    ).format(n=rng.randint(3, 28))
    impression = _pick(
        rng,
        (
            "No acute abnormality.",
            "Findings suspicious for malignancy; recommend PET-CT.",
            "Recommend follow-up CT in 3 months per Fleischner criteria.",
            "Cholelithiasis without evidence of acute cholecystitis.",
        ),
    )
    return (
        f"EXAM: {exam} {contrast}. INDICATION: "
        f"{_pick(rng, ('cough', 'headache', 'RUQ pain', 'staging', 'trauma'))}. "
        f"COMPARISON: {_pick(rng, ('None.', 'Prior study dated 2 months earlier.'))} "
        f"FINDINGS: {finding} IMPRESSION: 1. {impression}"
    )


def _emergency(rng: random.Random) -> str:
    arrival = _pick(rng, ("BIBA", "walk-in", "BIBP", "transfer from OSH"))
    mech = _pick(
        rng, ("MVC", "fall from standing", "assault", "sports injury", "abd pain", "overdose")
    )
    tx = _pick(
        rng,
        (
            "2 L NS bolus, morphine 4 mg IV, FAST neg",
            "C-collar, trauma series, tetanus given",
            "ondansetron 4 mg IV, lipase sent",
            "naloxone 0.4 mg IV, poison centre called",
            "laceration repair, 6 sutures",
        ),
    )
    dispo = _pick(rng, ("admit", "discharge home", "obs unit", "OR", "ICU"))
    return (
        f"Triage ESI {rng.randint(1, 5)}. {rng.randint(16, 90)}yo {arrival} after {mech}. "
        f"GCS {rng.randint(9, 15)}. HR {rng.randint(55, 140)} BP {rng.randint(85, 180)}/"
        f"{rng.randint(45, 110)} RR {rng.randint(12, 30)} SpO2 {rng.randint(88, 100)}% RA. "
        f"Tx: {tx}. Dispo: {dispo}."
    )


STYLES: dict[str, _Note] = {
    "cardiology": _cardiology,
    "oncology": _oncology,
    "radiology": _radiology,
    "emergency": _emergency,
}
"""Each department's note generator."""
DEPARTMENTS: tuple[str, ...] = tuple(STYLES)
"""The departments, in the demo's order."""


def department_texts(department: str, n: int, *, seed: int, split: str = "train") -> list[str]:
    """``n`` synthetic notes of ``department``, deterministic in ``seed`` and ``split``.

    Raises:
        ConfigError: ``department`` is not one of :data:`DEPARTMENTS`.
    """
    style = STYLES.get(department)
    if style is None:
        raise ConfigError(f"unknown department {department!r}; known: {', '.join(DEPARTMENTS)}")
    rng = random.Random(f"{department}-{split}-{seed}")
    return [style(rng) for _ in range(n)]


def write_department(
    site_dir: Path,
    department: str,
    *,
    seed: int,
    train_docs: int,
    val_docs: int,
    context: int,
) -> None:
    """Writes ``department``'s notes in ``site_dir`` as the ``causal_lm_finetune`` task
    reads them: ``schema.json`` (window ``context``), ``train.jsonl``, ``val.jsonl``.

    The base checkpoint (``site_dir/base``) is the caller's to place.
    """
    site_dir.mkdir(parents=True, exist_ok=True)
    schema = {"task": "causal_lm_finetune", "context": context}
    (site_dir / "schema.json").write_text(json.dumps(schema) + "\n", encoding="utf-8")
    for split, n in (("train", train_docs), ("val", val_docs)):
        texts = department_texts(department, n, seed=seed, split=split)
        lines = [json.dumps({"text": t}) for t in texts]
        (site_dir / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
