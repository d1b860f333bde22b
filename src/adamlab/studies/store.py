"""The results store of one study: ``STUDY_DIR/results.sqlite``, written only by coordinating processes.

SQLite gives one file per study, transactions that hold across processes, and (in WAL mode) readers such as
``adamlab status`` that never block a running sweep. Every write is a short ``BEGIN IMMEDIATE`` transaction, which
takes the write lock before reading, so:

* claiming is atomic: two coordinators can never move the same queued trial to ``running``;
* a finished trial's status and all its rows (steps, evaluations, environment) land together or not at all, and
  re-ingesting replaces rows instead of adding them.

A ``running`` trial whose owner is gone (its process no longer exists on this host, or its heartbeat is older
than ``stale_after``) goes back to ``queued`` at the next claim; ``train()`` then resumes it from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..training.records import StepRecord
from .spec import StudySpec
from .trials import Trial

STORE_FILE = "results.sqlite"
STATUSES = ("queued", "running", "done", "diverged", "failed")
FINISHED = ("done", "diverged")
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 10 * HEARTBEAT_SECONDS
BUSY_TIMEOUT_SECONDS = 60.0  # how long a writer waits for another's transaction before giving up

STEP_COLUMNS = StepRecord.measurements()  # one column per measurement of a step: a new field is a new column

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    spec_text TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    created TEXT NOT NULL,
    budget TEXT NOT NULL                -- JSON: search_space, trials_per_arm
);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY,               -- sha256 of the TrainConfig identity, shortened
    study TEXT NOT NULL REFERENCES studies(name),
    position INTEGER NOT NULL,          -- expansion order: run order and report order
    arm TEXT NOT NULL,
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    schedule TEXT NOT NULL,
    lr REAL,                            -- NULL: the optimizer computes its own step size
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,               -- JSON: the TrainConfig
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    owner TEXT,                         -- host:pid:token of the coordinator running it
    heartbeat REAL,                     -- unix time of the owner's last sign of life
    attempts INTEGER NOT NULL DEFAULT 0,
    started TEXT,                       -- ISO time the latest attempt was claimed
    finished TEXT,
    wall_seconds REAL,                  -- duration of the attempt that finished it
    steps_completed INTEGER,
    error TEXT,
    stepsize_estimate TEXT              -- JSON, for dds learning rates: alpha, its source, the multiplier
);
CREATE TABLE IF NOT EXISTS step_metrics (
    trial TEXT NOT NULL REFERENCES trials(key),
    step INTEGER NOT NULL,
    {"".join(f"{column} REAL,{chr(10)}    " for column in STEP_COLUMNS)}memory TEXT, -- JSON: RSS or CUDA bytes, GPU use
    PRIMARY KEY (trial, step)
);
CREATE TABLE IF NOT EXISTS evaluations (
    trial TEXT NOT NULL REFERENCES trials(key),
    step INTEGER NOT NULL,
    metrics TEXT NOT NULL,              -- JSON: the task's scores, n_total, n_invalid
    seconds REAL,
    PRIMARY KEY (trial, step)
);
CREATE TABLE IF NOT EXISTS environment (
    trial TEXT PRIMARY KEY REFERENCES trials(key),
    environment TEXT NOT NULL           -- JSON: library versions, platform, hardware
);
CREATE TABLE IF NOT EXISTS run_records (
    trial TEXT PRIMARY KEY REFERENCES trials(key),
    record TEXT NOT NULL                -- JSON: the run's result.json (evaluation settings, optimizer groups, tokens
                                        -- seen, peak memory, model and template hashes), environment left out
);
CREATE TABLE IF NOT EXISTS predictions (
    trial TEXT NOT NULL REFERENCES trials(key),
    position INTEGER NOT NULL,          -- order of the evaluation examples
    example TEXT NOT NULL,              -- the example's id
    output TEXT,                        -- JSON: the raw output (generated text, choice index, class)
    prediction TEXT,                    -- JSON: the parsed prediction; null when invalid
    answer TEXT NOT NULL,               -- JSON: the gold references (labels, letters or answer texts)
    PRIMARY KEY (trial, position)
);
"""
ROW_TABLES = ("step_metrics", "evaluations", "environment", "run_records", "predictions")

def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Owner:
    """A coordinating process. The token tells apart two processes that got the same pid."""

    host: str
    pid: int
    token: str

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])

    @classmethod
    def parse(cls, text: str) -> Owner:
        host, pid, token = text.rsplit(":", 2)
        return cls(host, int(pid), token)

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    def is_dead(self) -> bool:
        """True only when certain: its host is this one and no process has its pid. Elsewhere, only the heartbeat
        can tell."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, under another user
            return False
        return False


def is_abandoned(owner: str | None, heartbeat: float | None, now: float, stale_after: float) -> bool:
    return owner is None or heartbeat is None or now - heartbeat > stale_after or Owner.parse(owner).is_dead()


@dataclass
class TrialOutcome:
    """What the store records of one attempt at a trial. Plain data, so a remote worker can send it back."""

    status: str  # done | diverged | failed | interrupted (stopped by the user, to be resumed)
    steps_completed: int = 0
    wall_seconds: float = 0.0
    error: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # StepRecord.to_dict() of each step (metrics.jsonl)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # its evals.jsonl records
    environment: dict[str, Any] | None = None
    record: dict[str, Any] | None = None  # the run's result.json, for a trial that finished training
    predictions: list[dict[str, Any]] = field(default_factory=list)  # its predictions.jsonl records


@dataclass(frozen=True)
class TrialRow:
    key: str
    position: int
    arm: str
    model: str
    task: str
    optimizer: str
    schedule: str
    lr: float | None  # None: the optimizer computes its own step size
    seed: int
    config: dict[str, Any]
    status: str
    owner: str | None
    heartbeat: float | None
    attempts: int
    started: str | None
    finished: str | None
    wall_seconds: float | None
    steps_completed: int | None
    error: str | None
    stepsize_estimate: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TrialRow:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["config"] = json.loads(values["config"])
        values["stepsize_estimate"] = _loads(values["stepsize_estimate"])
        return cls(**values)


@dataclass(frozen=True)
class StudyRow:
    name: str
    description: str
    spec_text: str
    spec_hash: str
    created: str
    budget: dict[str, Any]


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class StoreError(ValueError):
    """A results store that cannot be used (damaged, or not an adamlab store); the message names the file."""


class Store:
    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.db = _connect(self.path, read_only)
        try:
            if read_only:
                tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "trials" not in tables or "studies" not in tables:
                    raise StoreError(f"{self.path} holds no adamlab results (an empty file, or another database)")
            else:
                self.db.executescript(SCHEMA)
                _add_new_step_columns(self.db)
        except sqlite3.DatabaseError as error:
            self.db.close()
            raise StoreError(f"{self.path} is not a readable results store ({error}); move it aside and run the "
                             "sweep again to rebuild it from the trial folders' results") from None
        except BaseException:
            self.db.close()
            raise

    @classmethod
    def open(cls, study_dir: str | Path, create: bool = False, read_only: bool = False) -> Store:
        """The study's store. ``read_only`` (for status and reports) never writes: not the schema, not a journal,
        and it works in a folder the user cannot write to."""
        path = Path(study_dir) / STORE_FILE
        if not create and not path.is_file():
            raise FileNotFoundError(f"{study_dir} holds no study results (no {STORE_FILE}); run `adamlab sweep` first")
        if read_only:
            return cls(path, read_only=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def study_dir(self) -> Path:
        return self.path.parent

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------------------------------ coordinator writes

    def register(self, spec: StudySpec, trials: list[Trial]) -> None:
        """Record the study and queue its new trials. Trials already known keep their status and results (only
        their labels and position follow the spec), so a re-run, or a spec that adds seeds or arms, runs only
        what is missing. Trials the spec no longer has stay, and are reported: nothing run is hidden."""
        with self._write() as db:
            existing = db.execute("SELECT name FROM studies").fetchone()
            if existing is not None and existing["name"] != spec.name:
                raise ValueError(f"{self.study_dir} holds study {existing['name']!r}, not {spec.name!r}; "
                                 "give the sweep another --out")
            # A report row is (model, task, arm, schedule, lr) over seeds: an arm that changed its configuration
            # under the same name would mix two configurations in one row.
            key_of_label = {(t.model, t.task, t.arm, t.schedule, t.lr, t.seed): t.key for t in trials}
            relabelled = set(key_of_label.values())  # trials of the spec take its labels, whatever they had
            for row in db.execute("SELECT key, model, task, arm, schedule, lr, seed FROM trials"):
                key = key_of_label.get((row["model"], row["task"], row["arm"], row["schedule"], row["lr"], row["seed"]))
                if key not in (None, row["key"]) and row["key"] not in relabelled:
                    raise ValueError(f"arm {row['arm']!r} ran another configuration in {self.study_dir} before "
                                     f"(trial {row['key']}); give the changed arm a new name, or another --out")
            db.execute(
                "INSERT INTO studies (name, description, spec_text, spec_hash, created, budget) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET description = excluded.description, "
                "spec_text = excluded.spec_text, spec_hash = excluded.spec_hash, budget = excluded.budget",
                (spec.name, spec.description, spec.text, spec.hash, _now_iso(), json.dumps(spec.budget.to_dict())),
            )
            db.executemany(
                "INSERT INTO trials (key, study, position, arm, model, task, optimizer, schedule, lr, seed, config, "
                "stepsize_estimate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET position = excluded.position, arm = excluded.arm, "
                "schedule = excluded.schedule, config = excluded.config, stepsize_estimate = excluded.stepsize_estimate",
                [(t.key, spec.name, t.position, t.arm, t.model, t.task, t.optimizer, t.schedule, t.lr, t.seed,
                  json.dumps(t.config.to_dict()), _dumps(t.stepsize_estimate)) for t in trials],
            )

    def claim(self, owner: Owner, stale_after: float = STALE_AFTER_SECONDS) -> TrialRow | None:
        """Move the first queued trial to ``running`` under ``owner``, after returning abandoned running trials to
        the queue; ``None`` when nothing is left to run."""
        now = time.time()
        with self._write() as db:
            for row in db.execute("SELECT key, owner, heartbeat FROM trials WHERE status = 'running'").fetchall():
                if is_abandoned(row["owner"], row["heartbeat"], now, stale_after):
                    db.execute("UPDATE trials SET status = 'queued', owner = NULL, heartbeat = NULL WHERE key = ?",
                               (row["key"],))
            row = db.execute("SELECT key FROM trials WHERE status = 'queued' ORDER BY position, key LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE trials SET status = 'running', owner = ?, heartbeat = ?, attempts = attempts + 1, started = ?, "
                "finished = NULL, error = NULL WHERE key = ?",
                (str(owner), now, _now_iso(), row["key"]),
            )
            return TrialRow.from_row(db.execute("SELECT * FROM trials WHERE key = ?", (row["key"],)).fetchone())

    def heartbeat(self, key: str, owner: Owner, every: float = HEARTBEAT_SECONDS) -> Heartbeat:
        return Heartbeat(self.path, key, owner, every)

    def release(self, key: str, owner: Owner) -> None:
        """Give an unfinished trial back to the queue (the user stopped the sweep); its checkpoint stays."""
        with self._write() as db:
            db.execute("UPDATE trials SET status = 'queued', owner = NULL, heartbeat = NULL "
                       "WHERE key = ? AND owner = ? AND status = 'running'", (key, str(owner)))

    def finish(self, key: str, owner: Owner, outcome: TrialOutcome) -> bool:
        """Record a finished attempt (done, diverged or failed) with all its rows, in one transaction. False, and
        nothing written, when ``owner`` no longer holds the trial: another coordinator took it over."""
        if outcome.status not in ("done", "diverged", "failed"):
            raise ValueError(f"cannot finish a trial with status {outcome.status!r}")
        with self._write() as db:
            updated = db.execute(
                "UPDATE trials SET status = ?, owner = NULL, heartbeat = NULL, finished = ?, wall_seconds = ?, "
                "steps_completed = ?, error = ? WHERE key = ? AND owner = ? AND status = 'running'",
                (outcome.status, _now_iso(), outcome.wall_seconds, outcome.steps_completed, outcome.error, key,
                 str(owner)),
            ).rowcount
            if not updated:
                return False
            for table in ROW_TABLES:
                db.execute(f"DELETE FROM {table} WHERE trial = ?", (key,))
            db.executemany(
                f"INSERT INTO step_metrics (trial, step, {', '.join(STEP_COLUMNS)}, memory) "
                f"VALUES (?, ?, {', '.join('?' for _ in STEP_COLUMNS)}, ?)",
                [(key, record["step"], *(record.get(c) for c in STEP_COLUMNS), json.dumps(_memory(record)))
                 for record in outcome.steps],
            )
            db.executemany(
                "INSERT INTO evaluations (trial, step, metrics, seconds) VALUES (?, ?, ?, ?)",
                [(key, record["step"], json.dumps({k: v for k, v in record.items() if k not in ("step", "seconds")}),
                  record.get("seconds")) for record in outcome.evaluations],
            )
            if outcome.environment is not None:
                db.execute("INSERT INTO environment (trial, environment) VALUES (?, ?)",
                           (key, json.dumps(outcome.environment)))
            if outcome.record is not None:
                record = {k: v for k, v in outcome.record.items() if k != "environment"}  # kept in its own table
                db.execute("INSERT INTO run_records (trial, record) VALUES (?, ?)", (key, json.dumps(record)))
            db.executemany(
                "INSERT INTO predictions (trial, position, example, output, prediction, answer) VALUES (?, ?, ?, ?, ?, ?)",
                [(key, position, str(p["id"]), json.dumps(p.get("output")), json.dumps(p.get("prediction")),
                  json.dumps(p.get("references", [])))
                 for position, p in enumerate(outcome.predictions)],
            )
        return True

    def requeue_failed(self) -> int:
        with self._write() as db:
            return db.execute("UPDATE trials SET status = 'queued', error = NULL WHERE status = 'failed'").rowcount

    # ------------------------------------------------------------------------------------------ reads

    def study(self) -> StudyRow:
        row = self.db.execute("SELECT * FROM studies").fetchone()
        if row is None:
            raise ValueError(f"{self.path} records no study")
        return StudyRow(row["name"], row["description"], row["spec_text"], row["spec_hash"], row["created"],
                        json.loads(row["budget"]))

    def trials(self) -> list[TrialRow]:
        return [TrialRow.from_row(row) for row in self.db.execute("SELECT * FROM trials ORDER BY position, key")]

    def counts(self) -> dict[str, int]:
        found = dict(self.db.execute("SELECT status, COUNT(*) FROM trials GROUP BY status").fetchall())
        return {status: found.get(status, 0) for status in STATUSES}

    def final_evaluations(self) -> dict[str, dict[str, Any]]:
        """Each trial's last evaluation (the one at the end of training for a finished trial)."""
        rows = self.db.execute(
            "SELECT trial, metrics FROM evaluations e WHERE step = (SELECT MAX(step) FROM evaluations WHERE trial = e.trial)"
        )
        return {trial: json.loads(metrics) for trial, metrics in rows}

    def final_losses(self) -> dict[str, float]:
        rows = self.db.execute(
            "SELECT trial, loss FROM step_metrics s WHERE step = (SELECT MAX(step) FROM step_metrics WHERE trial = s.trial)"
        )
        return dict(rows.fetchall())

    def step_metrics(self, key: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM step_metrics WHERE trial = ? ORDER BY step", (key,))
        return [{**dict(row), "memory": _loads(row["memory"])} for row in rows]

    def run_record(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT record FROM run_records WHERE trial = ?", (key,)).fetchone()
        return None if row is None else json.loads(row["record"])

    def evaluations(self, key: str) -> list[dict[str, Any]]:
        """Every evaluation of a trial, in step order: step, seconds and the task's scores."""
        rows = self.db.execute("SELECT step, seconds, metrics FROM evaluations WHERE trial = ? ORDER BY step", (key,))
        return [{"step": row["step"], "seconds": row["seconds"], **json.loads(row["metrics"])} for row in rows]

    def predictions(self, key: str) -> list[dict[str, Any]]:
        """The final evaluation's per-example records, as the run's predictions.jsonl holds them."""
        rows = self.db.execute("SELECT * FROM predictions WHERE trial = ? ORDER BY position", (key,))
        return [{"id": row["example"], "output": json.loads(row["output"]), "prediction": json.loads(row["prediction"]),
                 "references": json.loads(row["answer"])} for row in rows]

    def environments(self) -> dict[str, dict[str, Any]]:
        return {trial: json.loads(text) for trial, text in self.db.execute("SELECT trial, environment FROM environment")}


class Heartbeat:
    """Keeps a running trial's heartbeat fresh from a background thread (on its own connection) while ``train()``
    holds the coordinator's thread."""

    def __init__(self, path: Path, key: str, owner: Owner, every: float):
        self.path, self.key, self.owner, self.every = path, key, owner, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{key}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        db = _connect(self.path)
        try:
            while not self._stop.wait(self.every):
                with contextlib.suppress(sqlite3.OperationalError):  # a missed beat is harmless; the next one counts
                    db.execute("UPDATE trials SET heartbeat = ? WHERE key = ? AND owner = ?",
                               (time.time(), self.key, str(self.owner)))
        finally:
            db.close()


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        # mode=ro never creates or changes the file. A WAL store also needs its -shm index; where the folder is
        # read-only and there is none (the last writer closed cleanly and removed it), nobody can be writing, so
        # the file is opened as immutable, which needs no index.
        writable = os.access(path.parent, os.W_OK) and _folder_accepts_files(path.parent)
        uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if writable else "&immutable=1")
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)  # transactions are explicit
    db.row_factory = sqlite3.Row
    try:
        _switch_to_wal(db)
        db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as error:
        db.close()
        raise StoreError(f"{path} is not a readable results store ({error}); move it aside and run the sweep again "
                         "to rebuild it from the trial folders' results") from None
    return db


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """Put the store in WAL mode, waiting as long as for any other write. Switching a new file into WAL takes an
    exclusive lock without consulting the busy timeout, so where two coordinators open a new study at the same
    moment one of them is told "database is locked" at once (measured: 25 of 60 rounds of four processes)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _folder_accepts_files(folder: Path) -> bool:
    """``os.access`` says yes to root on a read-only mount: only creating a file tells for sure."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _memory(record: dict[str, Any]) -> dict[str, Any]:
    return StepRecord.from_dict(record).memory


def _add_new_step_columns(db: sqlite3.Connection) -> None:
    """A study made before a measurement joined ``StepRecord`` gets its column (empty for the old rows)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(step_metrics)")}
    for column in STEP_COLUMNS:
        if column not in present:
            try:
                db.execute(f"ALTER TABLE step_metrics ADD COLUMN {column} REAL")
            except sqlite3.OperationalError as error:  # another coordinator added it first
                if "duplicate column" not in str(error):
                    raise
