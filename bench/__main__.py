"""`python -m bench [--quick] [--soak SECONDS]`."""

from bench.run import main

raise SystemExit(main())
