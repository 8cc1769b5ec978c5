"""`python -m qbo_events` runs the command line."""

from qbo_events.cli import main

raise SystemExit(main())
