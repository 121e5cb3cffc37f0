"""`python -m taskembed ...` is the `taskembed` command."""

from taskembed.cli import main

raise SystemExit(main())
