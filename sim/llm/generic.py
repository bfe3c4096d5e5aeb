"""Generic everyday sentences from a small template grammar: the base model's pretraining text.

Synthetic: every sentence is generated here from the word lists below. The text is the
general language of a hospital's corridors (visits, meals, appointments), never a clinical
department's notes, so the departments' own corpora are new to the base model.
"""

from __future__ import annotations

import random

_PEOPLE = (
    "the nurse",
    "the visitor",
    "a porter",
    "my neighbour",
    "the receptionist",
    "a student",
    "the cleaner",
    "our friend",
    "the driver",
    "a volunteer",
    "the doctor",
    "his sister",
    "her father",
    "the child",
    "an old man",
    "a young woman",
    "the cook",
    "the manager",
)
_VERBS = (
    "walked to",
    "waited near",
    "looked for",
    "called",
    "opened",
    "closed",
    "cleaned",
    "visited",
    "left",
    "found",
    "carried the bag to",
    "brought flowers to",
    "asked about",
    "reached",
    "passed",
    "painted",
    "showed us",
    "locked",
)
_PLACES = (
    "the front desk",
    "the cafeteria",
    "the car park",
    "the main entrance",
    "the lift",
    "the waiting room",
    "the garden",
    "the shop",
    "the bus stop",
    "the library",
    "the kitchen",
    "the office",
    "the chapel",
    "the station",
    "the corridor",
    "the window",
)
_TIMES = (
    "in the morning",
    "after lunch",
    "before dinner",
    "at noon",
    "on monday",
    "on friday",
    "late at night",
    "early today",
    "last week",
    "every day",
    "this afternoon",
    "at eight",
)
_MOODS = (
    "It was a quiet day.",
    "The weather was cold.",
    "Everyone was kind.",
    "It started to rain.",
    "The coffee was warm.",
    "Nobody was in a hurry.",
    "The sun came out.",
    "It was busy.",
)
_QUESTIONS = (
    "Where is {place}?",
    "When does {place} open?",
    "Can you show me {place}?",
    "Is {place} far from here?",
    "How do I get to {place}?",
)


def generic_sentence(rng: random.Random) -> str:
    """One sentence of the grammar, drawn with ``rng``."""
    kind = rng.random()
    place = rng.choice(_PLACES)
    if kind < 0.6:
        return (
            f"{rng.choice(_PEOPLE).capitalize()} {rng.choice(_VERBS)} {place} {rng.choice(_TIMES)}."
        )
    if kind < 0.8:
        return rng.choice(_QUESTIONS).format(place=place)
    return rng.choice(_MOODS)


def generic_texts(n: int, *, seed: int) -> list[str]:
    """``n`` short paragraphs of two to four generic sentences, deterministic in ``seed``."""
    rng = random.Random(f"generic-{seed}")
    return [" ".join(generic_sentence(rng) for _ in range(rng.randint(2, 4))) for _ in range(n)]
