"""The bibliography: every entry is cited by a distinct author-year text.

The book cites with ``bibtex_reference_style: author_year``, which renders an entry as its
authors' surnames ("A", "A and B", or "A et al." from three authors on) and its ``year`` field.
Two entries that render alike, such as two papers by "LeCun et al." from 1998, would be
indistinguishable in the text; author-year styles tell them apart by a letter after the year.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pybtex.database import parse_file

BIB = Path(__file__).resolve().parents[1] / "references.bib"


def author_year(entry) -> str:
    """The text an author-year citation shows for ``entry``, e.g. "LeCun et al., 1998a"."""
    surnames = [" ".join(person.last_names) for person in entry.persons["author"]]
    if len(surnames) >= 3:
        authors = f"{surnames[0]} et al."
    else:
        authors = " and ".join(surnames)
    return f"{authors}, {entry.fields['year']}"


def test_author_year_texts_are_distinct():
    entries = parse_file(str(BIB)).entries
    counts = Counter(author_year(entry) for entry in entries.values())
    clashes = {text: n for text, n in counts.items() if n > 1}
    assert not clashes, (
        f"{clashes}: entries that cite alike; add a, b, ... to their years in references.bib")


def test_lecun_1998_entries_carry_suffixes():
    entries = parse_file(str(BIB)).entries
    assert author_year(entries["lecun1998gradient"]) == "LeCun et al., 1998a"
    assert author_year(entries["lecun1998efficient"]) == "LeCun et al., 1998b"
