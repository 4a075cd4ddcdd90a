"""Postgres, as the worker reads and writes it: one module per table it owns.

people (``users``), models, jobs (``sessions``, ``analysis_requests``,
``rejected_messages``), analyses (``angle_embeddings``, ``analyses``, ``baseline_sums``:
the incremental write), backfills, comparisons, deletions (one session out of the
history). Vectors cross the connection as bytea (vectors). Callers use ``store.<name>``;
the names below are the whole interface.
"""

from . import outbox
from .analyses import (
    Target,
    Write,
    analysis_write,
    history_scores,
    load_totals,
    rebuild_totals,
    save_analysis,
    store_sums,
)
from .backfills import (
    BackfillSource,
    backfill_write,
    finish_backfill,
    save_backfill,
    start_backfill,
)
from .comparisons import (
    fail_unfinished_comparison,
    finish_comparison,
    load_earlier_scores,
    load_for_comparison,
    load_windows,
    start_comparison,
)
from .deletions import Deleted, delete_session
from .jobs import (
    Superseded,
    deleted_or,
    fail_job,
    fail_unfinished,
    reject_message,
    start_job,
)
from .models import ModelNotActive, active_model, register_model
from .people import FORGOTTEN, admit, enroll
from .vectors import decode_vector, encode_vector

__all__ = [
    "FORGOTTEN",
    "BackfillSource",
    "Deleted",
    "ModelNotActive",
    "Superseded",
    "Target",
    "Write",
    "active_model",
    "admit",
    "analysis_write",
    "backfill_write",
    "decode_vector",
    "delete_session",
    "deleted_or",
    "encode_vector",
    "enroll",
    "fail_job",
    "fail_unfinished",
    "fail_unfinished_comparison",
    "finish_backfill",
    "finish_comparison",
    "history_scores",
    "load_earlier_scores",
    "load_for_comparison",
    "load_totals",
    "load_windows",
    "outbox",
    "rebuild_totals",
    "register_model",
    "reject_message",
    "save_analysis",
    "save_backfill",
    "start_backfill",
    "start_comparison",
    "start_job",
    "store_sums",
]
