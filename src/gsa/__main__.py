"""``python -m gsa`` (also what ``torchrun -m gsa`` runs): the gsa command line."""

from gsa.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
