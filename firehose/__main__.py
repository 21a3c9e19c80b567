"""Lets ``python -m firehose`` behave like the ``firehose`` console script."""

from firehose.cli import main

raise SystemExit(main())
