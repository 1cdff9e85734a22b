"""Allow ``python -m wsol`` (and ``torchrun -m wsol``)."""

from wsol.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
