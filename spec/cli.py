"""``python -m spec [pytest options]``: run the conformance suite.

This module imports neither torch nor hypothesis: pytest must import them itself (a user's
``filterwarnings = error`` turns pytest's "module already imported" warning into a crash).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest

CACHE_OPTIONS = frozenset({
    "--lf", "--last-failed", "--ff", "--failed-first", "--nf", "--new-first", "--sw",
    "--stepwise", "--sw-skip", "--stepwise-skip", "--sw-reset", "--stepwise-reset", "--lfnf",
    "--last-failed-no-failures", "--cache-show", "--cache-clear",
})
"""pytest options that need its cache (``.pytest_cache``): a run given one keeps the cache."""


def main(argv: list[str] | None = None) -> int:
    """Run the suite (``python -m spec``): pytest over ``spec.suite`` with ``argv`` added.

    Given paths or node ids of test files, pytest runs those instead of the whole suite, with
    the configuration it finds. The packaged suite runs with a configuration of its own: a
    ``pytest.ini`` or ``pyproject.toml`` in the current directory (``python_files``,
    ``filterwarnings``, ``addopts``...) is not applied to it, unless ``-c FILE`` says so. The
    cache (``.pytest_cache``) is off unless an option needs it (``--lf``, ``--ff``, ...).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    has_target = any(
        not a.startswith("-")
        and a.split("::")[0].endswith(".py")
        and os.path.exists(a.split("::")[0])
        for a in args
    )
    own_config = any(a == "-c" or a.startswith(("-c", "--config-file")) for a in args)
    with private_storage() as directory:
        base = [] if has_target else ["--pyargs", "spec.suite"]
        if not has_target and not own_config:
            ini = os.path.join(directory, "pytest.ini")
            with open(ini, "w", encoding="utf-8") as f:
                f.write("[pytest]\n")
            base += ["-c", ini, "--rootdir", os.getcwd()]
        if not any(a.split("=", 1)[0] in CACHE_OPTIONS for a in args):
            base += ["-p", "no:cacheprovider"]
        # -rfE: the short summary after the table lists failures and errors, not CUDA skips
        return int(pytest.main([*base, "-rfE", *args]))


@contextlib.contextmanager
def private_storage() -> Iterator[str]:
    """A temporary directory for the run, removed at the end, where hypothesis keeps its files
    (its example database, its cache of constants) instead of ``./.hypothesis``: a run leaves no
    trace in the user's directory. ``$HYPOTHESIS_STORAGE_DIRECTORY``, when set, is used for
    hypothesis instead."""
    directory = tempfile.mkdtemp(prefix="attention-spec-hypothesis-")
    private = not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY")
    configuration = sys.modules.get("hypothesis.configuration")  # None: not imported yet
    previous = vars(configuration).get("__hypothesis_home_directory") if configuration else None
    if private:
        # hypothesis reads the variable when it first stores something; if it is imported
        # already, its home directory is set directly
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = directory
        if configuration is not None:
            configuration.set_hypothesis_home_dir(directory)
    try:
        yield directory
    finally:
        if private:
            del os.environ["HYPOTHESIS_STORAGE_DIRECTORY"]
            configuration = sys.modules.get("hypothesis.configuration")
            if configuration is not None:  # what it was (None: read the default again)
                configuration.set_hypothesis_home_dir(previous)
        shutil.rmtree(directory, ignore_errors=True)
