"""`python -m isoflop ...`, so that `torchrun -m isoflop train ...` works."""

from isoflop.cli import main

raise SystemExit(main())
