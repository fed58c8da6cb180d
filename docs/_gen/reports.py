"""mkdocs-gen-files script (runs first): start the conformance suite in the background.

The suite runs against each implementation of ``sitedata.IMPLEMENTATIONS``, and the mutant
corpus's meta-test writes its detection table, while the figures are drawn; ``pages.py`` waits
for them. Up-to-date results are reused.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import sitedata

sitedata.start_reports()
