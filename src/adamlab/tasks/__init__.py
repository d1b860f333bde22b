"""Benchmark tasks: ``get_task(name, **options)`` returns a :class:`Task` with examples, a parser and scoring.

Fine-tuning tasks (AG News, SQuAD, CommonsenseQA, GSM8K, and GLUE in ``glue``), language-model corpora for
pre-training (``corpus``: ``c4``, ``wikitext2``) and the user's own task files (``custom``: a ``.yaml`` declaration
or a ``.jsonl`` file, passed by path). Each named task bundles a small seeded sample of its real data
(``adamlab/tasks/data``, with sources and licences in the READMEs there), so everything runs offline; a local JSONL
file or a Hugging Face dataset id can replace it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from .ag_news import AgNewsTask
from .base import DataError, Example, Task
from .commonsenseqa import CommonsenseQATask
from .corpus import CORPORA
from .custom import is_task_file, load_task_file
from .glue import GLUE_TASKS
from .gsm8k import GSM8KTask
from .squad import SquadTask
from .sst2 import SST2Task

__all__ = ["DataError", "Example", "Task", "available_tasks", "get_task"]

_TASKS: dict[str, Callable[..., Task]] = {
    task.name: task for task in (AgNewsTask, SquadTask, CommonsenseQATask, GSM8KTask, SST2Task, *GLUE_TASKS)
} | CORPORA
_ALIASES = {"squad_v1.1": "squad", "csqa": "commonsenseqa", "sst-2": "sst2", "sts-b": "stsb", "mnli_matched": "mnli"}


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, **options) -> Task:
    """The task called ``name`` (case-insensitive; aliases: squad_v1.1, csqa, sst-2, sts-b, mnli_matched), built with
    ``options`` (``prompt_style``, ``max_new_tokens``), or the user's task file: a ``.yaml``/``.yml`` task declaration
    or a ``.jsonl``/``.json`` data file (``adamlab.tasks.custom``), with ``options`` overriding its keys."""
    if is_task_file(name):
        return load_task_file(name, **options)
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _TASKS:
        close = difflib.get_close_matches(key, [*_TASKS, *_ALIASES], n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(available_tasks())}, or a task file "
                         "(.yaml, .jsonl).")
    task_class = _TASKS[key]
    valid = [n for n in inspect.signature(task_class).parameters]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for task {key!r}; valid options: {', '.join(valid) or 'none'}")
    return task_class(**options)
