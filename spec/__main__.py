"""``python -m spec [pytest options]``: run the conformance suite (:func:`spec.cli.main`)."""

from .cli import main

raise SystemExit(main())
