import pytest

from bnlib import seeds
from bnlib.seeds import SEED_OFFSET_VARIABLE, seed_offset


def test_without_an_offset_the_seeds_are_the_published_ones(monkeypatch):
    monkeypatch.delenv(SEED_OFFSET_VARIABLE, raising=False)
    assert seeds(3) == (0, 1, 2)
    assert seeds(2, start=3) == (3, 4)
    monkeypatch.setenv(SEED_OFFSET_VARIABLE, "")
    assert seed_offset() == 0


def test_the_offset_shifts_every_seed(monkeypatch):
    monkeypatch.setenv(SEED_OFFSET_VARIABLE, "100")
    assert seeds(3) == (100, 101, 102)
    assert seeds(1, start=5) == (105,)


@pytest.mark.parametrize("value", ["-1", "1.5", "ten"])
def test_a_bad_offset_says_what_to_set(monkeypatch, value):
    monkeypatch.setenv(SEED_OFFSET_VARIABLE, value)
    with pytest.raises(ValueError, match="non-negative integer"):
        seeds(1)


@pytest.mark.parametrize("count, start", [(0, 0), (2, -1), (True, 0), (1.0, 0)])
def test_bad_arguments_are_refused(monkeypatch, count, start):
    monkeypatch.delenv(SEED_OFFSET_VARIABLE, raising=False)
    with pytest.raises(ValueError, match="must be an integer"):
        seeds(count, start)
