"""Send a rule's logging, warnings and traceback to its log file."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path


def setup_logging(log_path: str | Path, level: int = logging.INFO) -> logging.Logger:
    """Route logging, warnings, stdout, stderr and uncaught exceptions to ``log_path``.

    Called first thing by every workflow script, so that a failing job's log holds the
    full traceback and the library's messages.

    Returns
    -------
    logging.Logger
        The ``brainlens`` logger.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(stream)],
        force=True,
    )
    logging.captureWarnings(True)
    # libraries that log to stdout/stderr (nipype, ANTs wrappers, tqdm) land in the log
    # too, provided they are imported after this call, as the workflow scripts do
    sys.stdout = stream
    sys.stderr = stream

    def _hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        # Written once: the default hook would print it again to sys.stderr, which
        # is this log too. The workflow's onerror prints its last lines on the terminal.
        stream.write("".join(traceback.format_exception(exc_type, exc, tb)))
        stream.flush()

    sys.excepthook = _hook
    return logging.getLogger("brainlens")
