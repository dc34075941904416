"""Write the persona pool the persona sampler draws from (blueprints/personas.json), deterministically.

Each persona combines one entry of each hand-written list below (an age band, an occupation, a circumstance,
a temperament, a way of writing) into two sentences. The combinations are drawn without repetition from a
seeded `random.Random`, so the pool is the same on every run; `tests/test_samplers.py` checks that the
shipped file is exactly what this script writes. Personas carry no names or places: those come from the
sampled user's record.

    python scripts/make_personas.py [OUT]   # default: blueprints/personas.json beside this script's repo
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 20250404
COUNT = 200

AGES = (
    "in their early twenties",
    "in their late twenties",
    "in their thirties",
    "in their forties",
    "in their fifties",
    "in their sixties",
)

OCCUPATIONS = (
    "nurse",
    "high-school teacher",
    "software developer",
    "bus driver",
    "accountant",
    "pharmacist",
    "electrician",
    "graphic designer",
    "restaurant cook",
    "college lecturer",
    "warehouse supervisor",
    "dental hygienist",
    "real-estate agent",
    "veterinarian",
    "police dispatcher",
    "librarian",
    "civil engineer",
    "hair stylist",
    "paramedic",
    "sales representative",
    "journalist",
    "lab technician",
    "plumber",
    "social worker",
    "flight attendant",
    "farmer",
    "insurance adjuster",
    "music teacher",
    "physiotherapist",
    "data analyst",
    "carpenter",
    "hotel receptionist",
    "lawyer",
    "delivery driver",
    "museum curator",
    "personal trainer",
    "translator",
    "small-business owner",
    "pastry chef",
    "project manager",
)

CIRCUMSTANCES = (
    "who works night shifts and handles errands in the early morning",
    "who juggles work and family and has very little free time",
    "who buys most things online to avoid crowded stores",
    "who travels for work several times a month",
    "who is planning a family reunion",
    "who just moved to a new apartment",
    "who manages purchases for an elderly parent",
    "who is saving money for a house and watches every expense",
    "who runs a side business from home",
    "who is new to doing this kind of thing online",
    "who is recovering from a minor surgery",
    "who is organising a friend's wedding",
    "who keeps careful records of every receipt",
    "who is often on the road with a patchy phone signal",
    "who shares an account's purchases with a partner",
    "who is preparing for a long trip abroad",
    "who volunteers at a community center on weekends",
    "who is between jobs and careful with money",
    "who buys gifts for a large extended family",
    "who is studying part-time in the evenings",
    "who has a busy week and wants this sorted quickly",
    "who was let down by customer service before",
    "who likes to compare options before deciding",
    "who is helping a younger relative with a big purchase",
    "who lives alone with two dogs",
)

TEMPERAMENTS = (
    "Patient and polite, but firm once they have made up their mind",
    "Impatient and easily annoyed by repeated questions",
    "Anxious about making mistakes, so they double-check every detail",
    "Cheerful and chatty, happy to make small talk",
    "Skeptical of companies and asks for the reason behind every rule",
    "Calm and methodical, dealing with one thing at a time",
    "Warm and grateful for any help",
    "Blunt and businesslike",
    "Easily confused by jargon and asks for plain explanations",
    "Indecisive, changing small details before settling",
    "Stressed and in a hurry",
    "Friendly but guarded about personal information",
    "Demanding, expecting things to be done right the first time",
    "Easygoing and flexible about the details",
    "Curious and asks how things work before agreeing",
    "Formal and courteous",
    "Frustrated after a bad experience, though still civil",
    "Cautious with money and wants every amount confirmed",
    "Optimistic and quick to agree once things are clear",
    "Reserved, saying only what they are asked",
)

STYLES = (
    "writes short, clipped messages",
    "writes in full sentences with a greeting and a sign-off",
    "types in lowercase with little punctuation",
    "gives details one at a time, only when asked",
    "mixes in casual slang",
    "asks follow-up questions before answering",
    "apologises often, even when nothing is their fault",
    "says exactly what they want in the first message",
    "tends to over-explain the background",
    "uses exclamation marks freely",
    "repeats key details to be sure they were understood",
    "answers with a plain yes or no whenever possible",
    "writes long messages that bundle several points",
    "makes the occasional typo and corrects it in the next message",
    "uses polite, slightly old-fashioned phrasing",
    "thinks out loud before deciding",
    "sticks to facts and numbers",
    "uses humour to ease the conversation",
    "asks for everything to be summarised at the end",
    "replies briefly and rarely volunteers extra information",
)

ATTRIBUTES = (AGES, OCCUPATIONS, CIRCUMSTANCES, TEMPERAMENTS, STYLES)


def persona(age: str, occupation: str, circumstance: str, temperament: str, style: str) -> str:
    article = "An" if occupation[0] in "aeiou" else "A"
    return f"{article} {occupation} {age} {circumstance}. {temperament}; {style}."


def personas(seed: int = SEED, count: int = COUNT) -> list[str]:
    """`count` distinct personas: distinct combination numbers decoded into one entry per attribute list."""
    total = 1
    for options in ATTRIBUTES:
        total *= len(options)
    pool = []
    for number in random.Random(seed).sample(range(total), count):
        parts = []
        for options in ATTRIBUTES:
            number, index = divmod(number, len(options))
            parts.append(options[index])
        pool.append(persona(*parts))
    return pool


def write(path: Path) -> None:
    path.write_text(json.dumps(personas(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str]) -> None:
    default = Path(__file__).resolve().parents[1] / "blueprints" / "personas.json"
    write(Path(argv[0]) if argv else default)


if __name__ == "__main__":
    main(sys.argv[1:])
