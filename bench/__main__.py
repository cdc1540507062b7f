"""`python -m bench [--quick] [--soak SECONDS]`."""

from bench.cli import main

raise SystemExit(main())
