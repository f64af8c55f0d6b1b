"""Glue shared by every workflow script: logging to the rule's log file, thread limits, clean errors.

A script in ``workflow/scripts/`` is a few lines::

    from normscape.runtime import script_main
    def main(smk): ...          # unpack smk.input/output/params, call the package
    script_main(snakemake, main)

Expected failures (:class:`normscape.errors.NormscapeError`) end the job with exit code 1 and one clear
message in the log and on stderr, no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from normscape.errors import NormscapeError

log = logging.getLogger("normscape")


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )


def set_threads(threads: int) -> None:
    """Limit intra-op parallelism to the threads Snakemake gave this job."""
    import torch

    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def script_main(smk: Any, main: Callable[[Any], None]) -> None:
    """Run ``main(smk)`` for a Snakemake ``script:`` job with logging, threads and clean user errors."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    set_threads(getattr(smk, "threads", 1))
    try:
        main(smk)
    except NormscapeError as exc:
        log.error("%s", exc)
        sys.exit(1)
    except Exception:
        # A bug, not a user error: keep the traceback, and put it in the rule's log too (on a cluster the
        # job's stderr goes to a separate scheduler log that users look at last).
        log.exception("unexpected error")
        raise
