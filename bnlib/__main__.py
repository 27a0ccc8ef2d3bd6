"""``python -m bnlib``: the command line of :mod:`bnlib.cli`."""

from bnlib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
