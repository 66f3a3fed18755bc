"""Running a sweep: model runs in batches, in-process or on a Dask cluster, rows streamed to
disk in sweep order.

:func:`iter_rows` takes the lazily generated :class:`~gpuvm.study.spec.RunTask` s of a
:class:`~gpuvm.study.spec.StudySpec`, groups them into batches (:func:`run_batch` runs one
batch and prices every run under its presets and refresh rates), and yields each batch's
rows in sweep order, whatever order the batches finish in.  The executor is
:class:`Serial` (in-process, the default) or :class:`DaskExecutor` (a local
``dask.distributed`` cluster of worker processes, or a running scheduler); only a bounded
number of batches is in flight, so memory stays bounded for any number of points.  Rows are
identical whatever the executor: each run is a pure function of its task.

:class:`RowSink` writes rows as they come: ``study.json`` (provenance, then the rows) and
``study.csv`` (the same rows), both valid after an interruption once closed.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, TextIO

from gpuvm.observe.costs import CostPreset
from gpuvm.study.runner import ROW_KEYS, RunRecord, price, record
from gpuvm.study.spec import RunTask

__all__ = [
    "BATCH_RUNS",
    "DaskExecutor",
    "DaskMissing",
    "Executor",
    "JsonRowsWriter",
    "RowSink",
    "Serial",
    "csv_line",
    "iter_rows",
    "run_batch",
]

Row = dict[str, object]
BatchResult = tuple[int, int, list[Row], list[tuple[str, str, str]], list[RunRecord]]

BATCH_RUNS: Final = 24
"""Model runs per batch (one Dask task): large enough that a task's overhead is small next
to its runs (10-100 ms each), small enough to spread a sweep over the workers."""

INSTALL_HINT: Final = (
    'pip install "gpuvm-model[scale]"  (or, in a checkout: pip install ".[scale]")'
)


class DaskMissing(RuntimeError):
    """``dask.distributed`` is not installed (the optional ``scale`` extra)."""


def run_batch(
    index: int,
    tasks: Sequence[RunTask],
    presets: Mapping[str, CostPreset],
    keep_runs: bool = False,
) -> BatchResult:
    """Run every task of a batch and price it: ``(index, tasks, rows, skipped, runs)``; ``runs``
    (the records) only with ``keep_runs``.  Pure: the same tasks give the same rows in any
    process."""
    rows: list[Row] = []
    skipped: list[tuple[str, str, str]] = []
    runs: list[RunRecord] = []
    for t in tasks:
        if t.skipped is not None:
            skipped.append((t.policy, t.spec.case, t.skipped))
            continue
        rec = record(t.policy, t.spec)
        if keep_runs:
            runs.append(rec)
        for name in t.presets:
            preset = presets[name]
            for hz in t.refresh:
                rows.append(price(rec, preset, hz))
    return index, len(tasks), rows, skipped, runs


def _batches(tasks: Iterable[RunTask], size: int) -> Iterator[list[RunTask]]:
    it = iter(tasks)
    while batch := list(itertools.islice(it, size)):
        yield batch


class Executor(Protocol):
    """Runs batches; yields their results in submission order."""

    def map_batches(
        self,
        batches: Iterator[list[RunTask]],
        presets: Mapping[str, CostPreset],
        keep_runs: bool,
    ) -> Iterator[BatchResult]: ...

    def close(self) -> None: ...


class Serial:
    """In-process, one batch after another."""

    name = "in-process"

    def map_batches(
        self,
        batches: Iterator[list[RunTask]],
        presets: Mapping[str, CostPreset],
        keep_runs: bool,
    ) -> Iterator[BatchResult]:
        for i, b in enumerate(batches):
            yield run_batch(i, b, presets, keep_runs)

    def close(self) -> None:
        pass


def _import_distributed() -> Any:
    try:
        import dask.distributed
    except ImportError:
        raise DaskMissing(f"--workers/--scheduler need dask.distributed: {INSTALL_HINT}") from None
    return dask.distributed


class DaskExecutor:
    """A ``dask.distributed`` client: ``workers`` local worker processes (one thread each),
    or the running cluster at ``scheduler`` (its workers must be able to import gpuvm and
    any ``module:Class`` policy).  At most ``inflight`` batches are submitted at a time."""

    def __init__(
        self, *, workers: int | None = None, scheduler: str | None = None, inflight: int = 0
    ) -> None:
        dd = _import_distributed()
        self._cluster: Any = None
        if scheduler is not None:
            self.client = dd.Client(scheduler)
            self.name = f"dask scheduler {scheduler}"
        else:
            n = workers or 2
            self._cluster = dd.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # The scheduler starts its HTTP routes even without a dashboard, on 8787 by
                # default; an ephemeral port avoids a clash (and a warning) with any other
                # cluster on the machine.
                scheduler_kwargs={"dashboard_address": ":0"},
                silence_logs=40,
            )
            self.client = dd.Client(self._cluster)
            self.name = f"dask LocalCluster, {n} worker processes"
        self._as_completed = dd.as_completed
        nworkers = len(self.client.scheduler_info().get("workers", {})) or (workers or 2)
        self.inflight = inflight or 3 * nworkers

    def map_batches(
        self,
        batches: Iterator[list[RunTask]],
        presets: Mapping[str, CostPreset],
        keep_runs: bool,
    ) -> Iterator[BatchResult]:
        # One future for the whole table (a scattered dict would become one future per
        # preset, keyed by its name, and collide with the next sweep's).
        table = self.client.scatter([dict(presets)], broadcast=True, hash=False)[0]
        pending: dict[int, BatchResult] = {}
        next_out = 0
        submitted = 0
        futures = self._as_completed()
        exhausted = False

        def submit_more() -> None:
            nonlocal submitted, exhausted
            while not exhausted and submitted - next_out < self.inflight:
                b = next(batches, None)
                if b is None:
                    exhausted = True
                    return
                futures.add(
                    self.client.submit(run_batch, submitted, b, table, keep_runs, pure=False)
                )
                submitted += 1

        submit_more()
        try:
            while next_out < submitted:
                fut = next(futures)
                result: BatchResult = fut.result()
                fut.release()
                pending[result[0]] = result
                while next_out in pending:
                    yield pending.pop(next_out)
                    next_out += 1
                submit_more()
        finally:
            for f in list(futures.futures):
                f.cancel()

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()


def iter_rows(
    tasks: Iterable[RunTask],
    presets: Mapping[str, CostPreset],
    *,
    executor: Executor | None = None,
    batch: int = BATCH_RUNS,
    on_batch: Callable[[int, list[tuple[str, str, str]], list[RunRecord]], None] | None = None,
    keep_runs: bool = False,
) -> Iterator[Row]:
    """The rows of every task, in sweep order.  ``on_batch(runs_done, skipped, records)``
    is called after each batch (progress, the not-applicable list, the run records when
    ``keep_runs``)."""
    ex = executor if executor is not None else Serial()
    for _, n, rows, skipped, runs in ex.map_batches(_batches(tasks, batch), presets, keep_runs):
        if on_batch is not None:
            on_batch(n, skipped, runs)
        yield from rows


def csv_line(row: Mapping[str, object]) -> str:
    """One CSV record of a row, columns in :data:`~gpuvm.study.runner.ROW_KEYS` order
    (None as an empty field)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        ["" if row[k] is None else row[k] for k in ROW_KEYS]
    )
    return buf.getvalue()


def _json_row(row: Mapping[str, object]) -> str:
    return json.dumps(dict(row), sort_keys=True, allow_nan=False)


class JsonRowsWriter:
    """Writes rows to a text stream as they come, as the same JSON array that
    :func:`~gpuvm.study.runner.dumps_rows` gives for the whole list (byte for byte):
    ``gpuvm study --json`` never holds its rows.  :meth:`close` ends the array."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.count = 0
        self.closed = False

    def write(self, row: Mapping[str, object]) -> None:
        text = json.dumps(dict(row), sort_keys=True, indent=2, allow_nan=False)
        self.stream.write(("[\n" if not self.count else ",\n") + _indent(text))
        self.count += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stream.write("\n]\n" if self.count else "[]\n")
        self.stream.flush()


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.split("\n"))


class RowSink:
    """Writes rows to ``study.json`` and ``study.csv`` in ``folder`` as they come.  The JSON
    is one object: ``{"provenance": {...}, "rows": [one row per line]}``; :meth:`close`
    finishes it (also after an interruption: the rows so far stay valid JSON).  Rows are
    written to ``*.partial`` files renamed into place at :meth:`close`, so a rerun never
    shows a mix of old and new rows."""

    def __init__(self, folder: Path, provenance: Mapping[str, object]) -> None:
        self.folder = folder
        self.json_path = folder / "study.json"
        self.csv_path = folder / "study.csv"
        self._json = (folder / "study.json.partial").open("w", encoding="utf-8")
        self._csv = (folder / "study.csv.partial").open("w", encoding="utf-8", newline="")
        head = json.dumps(dict(provenance), sort_keys=True, indent=2, allow_nan=False)
        self._json.write('{\n"provenance": ' + head + ',\n"rows": [\n')
        self._csv.write(",".join(ROW_KEYS) + "\n")
        self.count = 0
        self.closed = False

    def write(self, row: Mapping[str, object]) -> None:
        line = _json_row(row)
        self._json.write(("," if self.count else "") + line + "\n")
        self._csv.write(csv_line(row))
        self.count += 1
        if self.count % 256 == 0:
            self._json.flush()
            self._csv.flush()

    def flush(self) -> None:
        """Push the rows written so far to the ``*.partial`` files (one complete JSON
        object and CSV record per line)."""
        self._json.flush()
        self._csv.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._json.write("]\n}\n")
        self._json.close()
        self._csv.close()
        (self.folder / "study.json.partial").replace(self.json_path)
        (self.folder / "study.csv.partial").replace(self.csv_path)

    def __enter__(self) -> RowSink:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_rows(path: Path) -> Iterator[Row]:
    """The rows of a ``study.json`` written by :class:`RowSink`, one at a time (the file is
    read line by line, never whole)."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith('"rows": ['):
                break
        for line in f:
            text = line.strip().removeprefix(",")
            if text.startswith("{"):
                yield json.loads(text)
