"""mkdocs-gen-files script (runs first): start the conformance suite in the background.

The suite runs against each implementation of ``sitedata.IMPLEMENTATIONS`` while the figures
are drawn; ``pages.py`` waits for the reports. Up-to-date reports are reused.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import sitedata

sitedata.start_reports()
