"""``python -m spec [pytest options]``: run the conformance suite."""

from .plugin import main

raise SystemExit(main())
