"""``python -m selectlens``: the command line, where the ``selectlens`` script is not on the PATH."""

from selectlens.cli import main

raise SystemExit(main())
