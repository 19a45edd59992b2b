#!/usr/bin/env python3
"""Peer engines for the side-by-side benchmark: DuckDB, DataFusion, Polars and chdb.

The Rust harness (``benches``) drives this program to run the project's six benchmark queries
on four peer engines over the same Parquet files, so that our engine can be compared with them
row for row and millisecond for millisecond. Python 3.11, the standard library and the packages
pinned in ``requirements.txt`` (installed by ``setup.sh VENV_DIR``).

Sub-commands
============

``peers.py prepare --ipc DIR --out DIR``
    For each dataset ``apc``, ``op``, ``ec``: read ``DIR/<ds>.arrow`` (Arrow IPC file format, or
    an IPC stream) into memory (dictionaries unified and chunks combined, untimed), then time two
    Parquet writers over that in-memory table:

    * pyarrow: ``pyarrow.parquet.write_table(t, OUT/pyarrow/<ds>.parquet, compression="zstd")``;
    * DuckDB (threads=2): ``COPY (SELECT * FROM tbl) TO 'OUT/duckdb/<ds>.parquet'
      (FORMAT parquet, COMPRESSION zstd)`` with the table registered as ``tbl``.

    Only the writes are timed. Prints ONE JSON line::

        {"datasets": {"apc": {"rows": N, "pyarrow_secs": s, "pyarrow_bytes": b,
                              "duckdb_secs": s, "duckdb_bytes": b}, "op": {...}, "ec": {...}},
         "versions": {"pyarrow": "...", "duckdb": "...", "datafusion": "...",
                      "polars": "...", "chdb": "..."}}

    The workers then read ``OUT/pyarrow/<ds>.parquet``.

``peers.py worker --engine {duckdb,datafusion,polars,chdb} --data DIR [--threads 2]``
    A long-lived process over ``DIR/apc.parquet``, ``DIR/op.parquet``, ``DIR/ec.parquet``. The
    engine's thread count is set to ``--threads``; nothing is loaded up front (every query reads
    the Parquet files; only the OS page cache stays warm). Protocol, one JSON object per line:

    * first, once set up:   ``{"ready": true, "engine": "duckdb", "version": "2.0.1"}``
    * stdin, per request:   ``{"query": "Q3", "params": {"provider": "RXX", ...}}``
    * stdout, per request:  ``{"ms": 12.345, "rows": [["RXX", "2024-04", 123], ...]}`` where ``ms``
      is the wall time of executing the query and fetching its whole result into this process
      (as an Arrow table, or a Polars DataFrame), and ``rows`` is the canonical result (below);
    * on any error:         ``{"error": "..."}``, and the worker goes on with the next line.

    EOF on stdin: exit 0. If the engine cannot be set up, one ``{"error": ...}`` line and exit 2.
    Nothing else is written to stdout: the worker moves file descriptor 1 to stderr at start
    (so that a native library printing to stdout cannot corrupt the protocol) and writes the
    protocol on a private duplicate of the original stdout.

``peers.py selftest [--keep DIR]``
    Builds a small synthetic data set (a few thousand rows per dataset, nulls in the nullable
    columns, several providers, months and two financial years), writes it as Arrow IPC, runs
    ``prepare`` on it, then drives one worker per engine over the Parquet files (once as written
    by ``prepare``, once rewritten with many small row groups, sorted by date, so that statistics
    pruning is exercised) and checks every engine's canonical rows against a plain-Python
    reference. Prints a one-line summary; exits non-zero on any mismatch.

The queries
===========

Derived fields: ``activity_month`` 'YYYY-MM' of ``activity_date``; ``financial_year`` April to
March as 'YYYY-YY' (2024-04-01 -> '2024-25'); ``age_band`` '0-4', ..., '85-89', '90+' (null for a
null age); ``hrg_chapter`` the first two characters of ``hrg`` (null for a null HRG).

* Q1 ``{}``: apc + op + ec; sum(price) by provider_code, activity_month.
  Rows ``[provider, month, sum]``.
* Q2 ``{}``: apc + op + ec; count(*), sum(price) by financial_year, pod.
  Rows ``[fy, pod, count, sum]``.
* Q3 ``{"provider", "start", "end"}``: op, one provider, activity_date in [start, end];
  count(*), sum(price) by treatment_function_code. Rows ``[tfc, count, sum]``.
* Q4 ``{"chapter"}``: apc with hrg_chapter = chapter; count(*), sum(price) by
  commissioner_code, age_band. Rows ``[commissioner, band, count, sum]``.
* Q5 ``{}``: op; distinct patients by provider_code, a row's patient being its NHS number,
  else (provider, local_patient_id), else none. Rows ``[provider, patients]``.
* Q6 ``{"provider", "month"}``: the Monthly Trust Statement: per dataset, one provider and one
  activity month; count(*), sum(excess_bed_days), sum(price), sum(pbr_excluded) by
  commissioner_code, dataset, pod, HRG (spell_hrg for apc). Rows
  ``[commissioner, ds, pod, hrg, count, excess_bed_days, price, excluded]``.

Canonical rows: a list of lists, group keys first (strings, or null: a null key stays null),
then the aggregates as integers (never floats); sorted by the keys, null before any string.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

DATASETS = ("apc", "op", "ec")
ENGINE_NAMES = ("duckdb", "datafusion", "polars", "chdb")
# Query -> (number of group-key columns, number of aggregate columns).
QUERIES: dict[str, tuple[int, int]] = {
    "Q1": (2, 1),
    "Q2": (2, 2),
    "Q3": (1, 2),
    "Q4": (2, 2),
    "Q5": (1, 1),
    "Q6": (4, 4),
}


def log(*parts: object) -> None:
    print("peers:", *parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Parameters and canonical results
# --------------------------------------------------------------------------------------------


class Params:
    """A query's validated parameters (only those the query uses are required)."""

    def __init__(self, query: str, raw: dict[str, Any]):
        if not isinstance(raw, dict):
            raise ValueError("params must be a JSON object")
        self.query = query
        self.provider = ""
        self.chapter = ""
        self.start = self.end = dt.date.min
        # Q6's activity month as a half-open date range [month_start, month_end).
        self.month_start = self.month_end = dt.date.min
        if query in ("Q3", "Q6"):
            self.provider = _text(raw, "provider")
        if query == "Q3":
            self.start = _date(raw, "start")
            self.end = _date(raw, "end")
        if query == "Q4":
            self.chapter = _text(raw, "chapter")
        if query == "Q6":
            month = _text(raw, "month")
            m = re.fullmatch(r"(\d{4})-(\d{2})", month)
            if not m or not 1 <= int(m.group(2)) <= 12:
                raise ValueError(f"month must be YYYY-MM, got {month!r}")
            year, mon = int(m.group(1)), int(m.group(2))
            self.month_start = dt.date(year, mon, 1)
            self.month_end = dt.date(year + mon // 12, mon % 12 + 1, 1)


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ValueError(f"parameter {key!r} must be a string")
    return value


def _date(raw: dict[str, Any], key: str) -> dt.date:
    return dt.date.fromisoformat(_text(raw, key))


def _as_int(value: Any) -> int:
    """An aggregate as a Python int: DuckDB sums come back as HUGEINT (Decimal(38, 0))."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise TypeError(f"aggregate is not an integer: {value!r} ({type(value).__name__})")


def _key_order(row: list[Any], nkeys: int) -> tuple[tuple[Any, ...], ...]:
    return tuple((0,) if k is None else (1, k) for k in row[:nkeys])


def canonical(query: str, rows: list[tuple[Any, ...]] | list[list[Any]]) -> list[list[Any]]:
    """Keys as str or None, aggregates as int, sorted by the keys (None first)."""
    nkeys, naggs = QUERIES[query]
    out: list[list[Any]] = []
    for row in rows:
        row = list(row)
        if len(row) != nkeys + naggs:
            raise ValueError(f"{query}: row has {len(row)} columns, expected {nkeys + naggs}")
        for k in row[:nkeys]:
            if k is not None and not isinstance(k, str):
                raise TypeError(f"{query}: group key is not text: {k!r}")
        out.append(row[:nkeys] + [_as_int(v) for v in row[nkeys:]])
    out.sort(key=lambda r: _key_order(r, nkeys))
    return out


def arrow_rows(table: Any) -> list[tuple[Any, ...]]:
    """Rows of a pyarrow Table as tuples of Python values (dictionary columns as str)."""
    return list(zip(*(column.to_pylist() for column in table.columns)))


# --------------------------------------------------------------------------------------------
# Engines. Each has `name`, `version`, `run(query, params) -> result` (executes and fetches the
# whole result into this process; this is what is timed) and `rows(result) -> list of tuples`.
# --------------------------------------------------------------------------------------------


def sql_text(value: str, backslash: bool = False) -> str:
    """A SQL string literal. ClickHouse also treats backslash as an escape character."""
    if backslash:
        value = value.replace("\\", "\\\\")
    return "'" + value.replace("'", "''") + "'"


class DuckDBEngine:
    """DuckDB: one in-memory connection with a view per dataset over `read_parquet`."""

    name = "duckdb"

    def __init__(self, data: Path, threads: int):
        import duckdb

        self.version = duckdb.__version__
        self.con = duckdb.connect()
        self.con.execute(f"SET threads = {int(threads)}")
        self.con.execute("SET enable_progress_bar = false")
        for ds in DATASETS:
            path = sql_text(str(data / f"{ds}.parquet"))
            self.con.execute(f"CREATE VIEW {ds} AS SELECT * FROM read_parquet({path})")

    def run(self, query: str, p: Params) -> Any:
        sql = getattr(self, query.lower())(p)
        return self.con.sql(sql).to_arrow_table()

    rows = staticmethod(arrow_rows)

    @staticmethod
    def q1(p: Params) -> str:
        return """
            SELECT provider_code, strftime(month, '%Y-%m') AS activity_month, total
            FROM (
                SELECT provider_code, date_trunc('month', activity_date) AS month,
                       sum(price) AS total
                FROM (SELECT provider_code, activity_date, price FROM apc
                      UNION ALL SELECT provider_code, activity_date, price FROM op
                      UNION ALL SELECT provider_code, activity_date, price FROM ec)
                GROUP BY ALL)"""

    @staticmethod
    def q2(p: Params) -> str:
        return """
            SELECT printf('%d-%02d', fy, (fy + 1) % 100) AS financial_year, pod, n, total
            FROM (
                SELECT year(activity_date) - CASE WHEN month(activity_date) < 4 THEN 1 ELSE 0 END
                           AS fy,
                       pod, count(*) AS n, sum(price) AS total
                FROM (SELECT activity_date, pod, price FROM apc
                      UNION ALL SELECT activity_date, pod, price FROM op
                      UNION ALL SELECT activity_date, pod, price FROM ec)
                GROUP BY ALL)"""

    @staticmethod
    def q3(p: Params) -> str:
        return f"""
            SELECT treatment_function_code, count(*), sum(price)
            FROM op
            WHERE provider_code = {sql_text(p.provider)}
              AND activity_date BETWEEN DATE '{p.start}' AND DATE '{p.end}'
            GROUP BY treatment_function_code"""

    @staticmethod
    def q4(p: Params) -> str:
        return f"""
            SELECT commissioner_code,
                   CASE WHEN band IS NULL THEN NULL
                        WHEN band = 18 THEN '90+'
                        ELSE printf('%d-%d', band * 5, band * 5 + 4) END AS age_band,
                   n, total
            FROM (
                SELECT commissioner_code,
                       CASE WHEN age_at_activity >= 90 THEN 18 ELSE age_at_activity // 5 END
                           AS band,
                       count(*) AS n, sum(price) AS total
                FROM apc
                WHERE left(hrg, 2) = {sql_text(p.chapter)}
                GROUP BY ALL)"""

    @staticmethod
    def q5(p: Params) -> str:
        # NHS-number patients and (provider, local id) patients are disjoint by definition, and
        # the provider is the group key: the distinct patients are the distinct NHS numbers plus
        # the distinct local ids of rows without an NHS number.
        return """
            SELECT provider_code,
                   count(DISTINCT nhs_number)
                   + count(DISTINCT local_patient_id) FILTER (WHERE nhs_number IS NULL)
            FROM op
            GROUP BY provider_code"""

    @staticmethod
    def q6(p: Params) -> str:
        parts = []
        for ds in DATASETS:
            hrg = "spell_hrg" if ds == "apc" else "hrg"
            parts.append(f"""
                SELECT commissioner_code, '{ds}' AS ds, pod, {hrg} AS hrg, count(*),
                       sum(excess_bed_days), sum(price), count(*) FILTER (WHERE pbr_excluded)
                FROM {ds}
                WHERE provider_code = {sql_text(p.provider)}
                  AND activity_date >= DATE '{p.month_start}'
                  AND activity_date < DATE '{p.month_end}'
                GROUP BY commissioner_code, pod, {hrg}""")
        return "\nUNION ALL".join(parts)


class DataFusionEngine:
    """Apache DataFusion: a SessionContext with each dataset registered as a Parquet table."""

    name = "datafusion"

    def __init__(self, data: Path, threads: int):
        import datafusion
        from datafusion import SessionConfig, SessionContext

        self.version = datafusion.__version__
        config = SessionConfig().with_target_partitions(int(threads))
        self.ctx = SessionContext(config)
        for ds in DATASETS:
            # Registration reads the footer for the schema only; every query scans the file.
            self.ctx.register_parquet(ds, str(data / f"{ds}.parquet"))

    def run(self, query: str, p: Params) -> Any:
        sql = getattr(self, query.lower())(p)
        return self.ctx.sql(sql).to_arrow_table()

    rows = staticmethod(arrow_rows)

    @staticmethod
    def q1(p: Params) -> str:
        return """
            SELECT provider_code, to_char(month, '%Y-%m') AS activity_month, total
            FROM (
                SELECT provider_code, date_trunc('month', activity_date) AS month,
                       sum(price) AS total
                FROM (SELECT provider_code, activity_date, price FROM apc
                      UNION ALL SELECT provider_code, activity_date, price FROM op
                      UNION ALL SELECT provider_code, activity_date, price FROM ec) AS t
                GROUP BY provider_code, month) AS g"""

    @staticmethod
    def q2(p: Params) -> str:
        return """
            SELECT CAST(fy AS VARCHAR) || '-' || lpad(CAST((fy + 1) % 100 AS VARCHAR), 2, '0')
                       AS financial_year,
                   pod, n, total
            FROM (
                SELECT date_part('year', activity_date)
                       - CASE WHEN date_part('month', activity_date) < 4 THEN 1 ELSE 0 END AS fy,
                       pod, count(*) AS n, sum(price) AS total
                FROM (SELECT activity_date, pod, price FROM apc
                      UNION ALL SELECT activity_date, pod, price FROM op
                      UNION ALL SELECT activity_date, pod, price FROM ec) AS t
                GROUP BY fy, pod) AS g"""

    @staticmethod
    def q3(p: Params) -> str:
        return f"""
            SELECT treatment_function_code, count(*), sum(price)
            FROM op
            WHERE provider_code = {sql_text(p.provider)}
              AND activity_date BETWEEN DATE '{p.start}' AND DATE '{p.end}'
            GROUP BY treatment_function_code"""

    @staticmethod
    def q4(p: Params) -> str:
        # `||` (unlike concat()) propagates nulls; the CASE keeps a null band null regardless.
        return f"""
            SELECT commissioner_code,
                   CASE WHEN band IS NULL THEN NULL
                        WHEN band = 18 THEN '90+'
                        ELSE CAST(band * 5 AS VARCHAR) || '-' || CAST(band * 5 + 4 AS VARCHAR)
                   END AS age_band,
                   n, total
            FROM (
                SELECT commissioner_code,
                       CASE WHEN age_at_activity >= 90 THEN 18
                            ELSE CAST(age_at_activity AS BIGINT) / 5 END AS band,
                       count(*) AS n, sum(price) AS total
                FROM apc
                WHERE left(hrg, 2) = {sql_text(p.chapter)}
                GROUP BY commissioner_code, band) AS g"""

    @staticmethod
    def q5(p: Params) -> str:
        return """
            SELECT provider_code,
                   count(DISTINCT nhs_number)
                   + count(DISTINCT CASE WHEN nhs_number IS NULL THEN local_patient_id END)
            FROM op
            GROUP BY provider_code"""

    @staticmethod
    def q6(p: Params) -> str:
        parts = []
        for ds in DATASETS:
            hrg = "spell_hrg" if ds == "apc" else "hrg"
            parts.append(f"""
                SELECT commissioner_code, '{ds}' AS ds, pod, {hrg} AS hrg, count(*) AS n,
                       sum(excess_bed_days) AS ebd, sum(price) AS total,
                       sum(CAST(pbr_excluded AS BIGINT)) AS excluded
                FROM {ds}
                WHERE provider_code = {sql_text(p.provider)}
                  AND activity_date >= DATE '{p.month_start}'
                  AND activity_date < DATE '{p.month_end}'
                GROUP BY commissioner_code, pod, {hrg}""")
        return "\nUNION ALL".join(parts)


class ChdbEngine:
    """chdb (embedded ClickHouse): one connection; datasets read with `file(path, Parquet)`.

    ClickHouse reads the Parquet files' own nullability (schema_inference_make_columns_nullable
    follows the file), so nullable dictionary columns come back as Nullable(String), group keys
    keep NULL, and `date32` is read as Date32. String literals escape backslashes too. Aliases
    never reuse the name of a column that the same query aggregates (ClickHouse aliases are
    visible everywhere in a SELECT).
    """

    name = "chdb"

    def __init__(self, data: Path, threads: int):
        import chdb

        self.version = chdb.__version__
        self.conn = chdb.connect(":memory:")
        self.conn.query(f"SET max_threads = {int(threads)}")
        core = self.conn.query("SELECT version()", "TabSeparated").bytes().decode().strip()
        log(f"chdb {self.version}, ClickHouse {core}")
        self.table = {
            ds: f"file({sql_text(str(data / f'{ds}.parquet'), backslash=True)}, Parquet)"
            for ds in DATASETS
        }

    def run(self, query: str, p: Params) -> Any:
        sql = getattr(self, query.lower())(p)
        return self.conn.query(sql, "ArrowTable")

    rows = staticmethod(arrow_rows)

    def q1(self, p: Params) -> str:
        t = self.table
        return f"""
            SELECT provider_code, formatDateTime(month, '%Y-%m') AS activity_month, total
            FROM (
                SELECT provider_code, toStartOfMonth(activity_date) AS month,
                       sum(price) AS total
                FROM (SELECT provider_code, activity_date, price FROM {t['apc']}
                      UNION ALL SELECT provider_code, activity_date, price FROM {t['op']}
                      UNION ALL SELECT provider_code, activity_date, price FROM {t['ec']})
                GROUP BY provider_code, month)"""

    def q2(self, p: Params) -> str:
        t = self.table
        return f"""
            SELECT concat(toString(fy), '-', leftPad(toString((fy + 1) % 100), 2, '0'))
                       AS financial_year,
                   pod, n, total
            FROM (
                SELECT toYear(activity_date) - if(toMonth(activity_date) < 4, 1, 0) AS fy,
                       pod, count() AS n, sum(price) AS total
                FROM (SELECT activity_date, pod, price FROM {t['apc']}
                      UNION ALL SELECT activity_date, pod, price FROM {t['op']}
                      UNION ALL SELECT activity_date, pod, price FROM {t['ec']})
                GROUP BY fy, pod)"""

    def q3(self, p: Params) -> str:
        return f"""
            SELECT treatment_function_code, count(), sum(price)
            FROM {self.table['op']}
            WHERE provider_code = {sql_text(p.provider, backslash=True)}
              AND activity_date BETWEEN toDate32('{p.start}') AND toDate32('{p.end}')
            GROUP BY treatment_function_code"""

    def q4(self, p: Params) -> str:
        return f"""
            SELECT commissioner_code,
                   multiIf(band IS NULL, NULL, band = 18, '90+',
                           concat(toString(band * 5), '-', toString(band * 5 + 4))) AS age_band,
                   n, total
            FROM (
                SELECT commissioner_code,
                       if(age_at_activity >= 90, 18, intDiv(age_at_activity, 5)) AS band,
                       count() AS n, sum(price) AS total
                FROM {self.table['apc']}
                WHERE leftUTF8(hrg, 2) = {sql_text(p.chapter, backslash=True)}
                GROUP BY commissioner_code, band)"""

    def q5(self, p: Params) -> str:
        # uniqExact: exact distinct counts (uniq would be an approximation); NULLs are skipped.
        return f"""
            SELECT provider_code,
                   uniqExact(nhs_number) + uniqExactIf(local_patient_id, nhs_number IS NULL)
            FROM {self.table['op']}
            GROUP BY provider_code"""

    def q6(self, p: Params) -> str:
        parts = []
        for ds in DATASETS:
            hrg = "spell_hrg" if ds == "apc" else "hrg"
            parts.append(f"""
                SELECT commissioner_code, '{ds}' AS ds, pod, {hrg}, count(),
                       sum(excess_bed_days), sum(price), countIf(pbr_excluded)
                FROM {self.table[ds]}
                WHERE provider_code = {sql_text(p.provider, backslash=True)}
                  AND activity_date >= toDate32('{p.month_start}')
                  AND activity_date < toDate32('{p.month_end}')
                GROUP BY commissioner_code, pod, {hrg}""")
        return "\nUNION ALL".join(parts)


class PolarsEngine:
    """Polars: lazy `scan_parquet` per query (dictionary columns read as Categorical)."""

    name = "polars"

    def __init__(self, data: Path, threads: int):
        # Polars sizes its thread pool when first imported.
        if "polars" in sys.modules:
            log("warning: polars was imported before POLARS_MAX_THREADS was set")
        os.environ["POLARS_MAX_THREADS"] = str(int(threads))
        import polars

        self.pl = polars
        self.version = polars.__version__
        self.paths = {ds: str(data / f"{ds}.parquet") for ds in DATASETS}
        log(f"polars thread pool: {polars.thread_pool_size()}")

    def run(self, query: str, p: Params) -> Any:
        return getattr(self, query.lower())(p).collect()

    @staticmethod
    def rows(frame: Any) -> list[tuple[Any, ...]]:
        return frame.rows()

    def scan(self, ds: str) -> Any:
        return self.pl.scan_parquet(self.paths[ds])

    def q1(self, p: Params) -> Any:
        pl = self.pl
        cols = ["provider_code", "activity_date", "price"]
        return (
            pl.concat([self.scan(ds).select(cols) for ds in DATASETS])
            .group_by("provider_code", pl.col("activity_date").dt.month_start().alias("month"))
            .agg(pl.col("price").sum())
            .select("provider_code", pl.col("month").dt.strftime("%Y-%m"), "price")
        )

    def q2(self, p: Params) -> Any:
        pl = self.pl
        date = pl.col("activity_date")
        fy = (date.dt.year() - (date.dt.month() < 4).cast(pl.Int32)).alias("fy")
        label = pl.format("{}-{}", "fy", ((pl.col("fy") + 1) % 100).cast(pl.String).str.zfill(2))
        cols = ["activity_date", "pod", "price"]
        return (
            pl.concat([self.scan(ds).select(cols) for ds in DATASETS])
            .group_by(fy, "pod")
            .agg(pl.len().alias("n"), pl.col("price").sum())
            .select(label.alias("financial_year"), "pod", "n", "price")
        )

    def q3(self, p: Params) -> Any:
        pl = self.pl
        return (
            self.scan("op")
            .filter(
                (pl.col("provider_code") == p.provider)
                & pl.col("activity_date").is_between(p.start, p.end, closed="both")
            )
            .group_by("treatment_function_code")
            .agg(pl.len(), pl.col("price").sum())
        )

    def q4(self, p: Params) -> Any:
        pl = self.pl
        age = pl.col("age_at_activity")
        band = (
            pl.when(age >= 90).then(pl.lit(18, pl.Int32)).otherwise((age // 5).cast(pl.Int32))
        ).alias("band")
        b = pl.col("band")
        label = pl.when(b == 18).then(pl.lit("90+")).otherwise(pl.format("{}-{}", b * 5, b * 5 + 4))
        return (
            self.scan("apc")
            .filter(pl.col("hrg").cat.slice(0, 2) == p.chapter)
            .group_by("commissioner_code", band)
            .agg(pl.len().alias("n"), pl.col("price").sum())
            .select("commissioner_code", label.alias("age_band"), "n", "price")
        )

    def q5(self, p: Params) -> Any:
        pl = self.pl
        nhs, local = pl.col("nhs_number"), pl.col("local_patient_id")
        patients = nhs.drop_nulls().n_unique() + local.filter(nhs.is_null()).drop_nulls().n_unique()
        return self.scan("op").group_by("provider_code").agg(patients.alias("patients"))

    def q6(self, p: Params) -> Any:
        pl = self.pl
        date = pl.col("activity_date")
        frames = []
        for ds in DATASETS:
            hrg = "spell_hrg" if ds == "apc" else "hrg"
            frames.append(
                self.scan(ds)
                .filter(
                    (pl.col("provider_code") == p.provider)
                    & (date >= p.month_start)
                    & (date < p.month_end)
                )
                .group_by("commissioner_code", "pod", pl.col(hrg).alias("hrg"))
                .agg(
                    pl.len().alias("n"),
                    pl.col("excess_bed_days").cast(pl.Int64).sum().alias("excess_bed_days"),
                    pl.col("price").sum(),
                    pl.col("pbr_excluded").sum().cast(pl.Int64).alias("excluded"),
                )
                .select(
                    "commissioner_code", pl.lit(ds).alias("ds"), "pod", "hrg",
                    "n", "excess_bed_days", "price", "excluded",
                )
            )
        return pl.concat(frames)


ENGINES: dict[str, Callable[[Path, int], Any]] = {
    "duckdb": DuckDBEngine,
    "datafusion": DataFusionEngine,
    "polars": PolarsEngine,
    "chdb": ChdbEngine,
}


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def protocol_stdout() -> Any:
    """A private stream on the original stdout; fd 1 (and sys.stdout) now go to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def emit(out: Any, message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":")) + "\n")
    out.flush()


def cmd_worker(args: argparse.Namespace) -> int:
    out = protocol_stdout()
    try:
        engine = ENGINES[args.engine](Path(args.data).resolve(), args.threads)
    except Exception as e:  # noqa: BLE001 - reported on the protocol
        emit(out, {"error": f"setting up {args.engine}: {type(e).__name__}: {e}"})
        return 2
    emit(out, {"ready": True, "engine": engine.name, "version": engine.version})
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            query = request.get("query")
            if query not in QUERIES:
                raise ValueError(f"unknown query {query!r}")
            params = Params(query, request.get("params") or {})
            started = time.perf_counter()
            result = engine.run(query, params)
            ms = (time.perf_counter() - started) * 1e3
            rows = canonical(query, engine.rows(result))
            reply: dict[str, Any] = {"ms": round(ms, 3), "rows": rows}
        except Exception as e:  # noqa: BLE001 - reported on the protocol
            reply = {"error": f"{type(e).__name__}: {e}"}
        try:
            emit(out, reply)
        except BrokenPipeError:
            return 0


def read_ipc(path: Path) -> Any:
    """An Arrow IPC file (or stream) read into memory."""
    import pyarrow as pa

    with pa.OSFile(str(path), "rb") as f:
        try:
            return pa.ipc.open_file(f).read_all()
        except pa.ArrowInvalid:
            f.seek(0)
            return pa.ipc.open_stream(f).read_all()


def versions() -> dict[str, str]:
    return {
        name: importlib.metadata.version(name)
        for name in ("pyarrow", "duckdb", "datafusion", "polars", "chdb")
    }


def cmd_prepare(args: argparse.Namespace) -> int:
    out = protocol_stdout()
    import duckdb
    import pyarrow.parquet as pq

    ipc, dest = Path(args.ipc), Path(args.out)
    (dest / "pyarrow").mkdir(parents=True, exist_ok=True)
    (dest / "duckdb").mkdir(parents=True, exist_ok=True)
    datasets: dict[str, dict[str, Any]] = {}
    for ds in DATASETS:
        # One dictionary per column and one chunk per column, as a table an analyst builds in
        # memory: batches of an export each carry their own dictionaries, and writing those made
        # pyarrow about 20 times slower (that would flatter every ratio against it).
        table = read_ipc(ipc / f"{ds}.arrow").unify_dictionaries().combine_chunks()

        pa_path = dest / "pyarrow" / f"{ds}.parquet"
        started = time.perf_counter()
        pq.write_table(table, str(pa_path), compression="zstd")
        pa_secs = time.perf_counter() - started

        dd_path = dest / "duckdb" / f"{ds}.parquet"
        con = duckdb.connect()
        try:
            con.execute(f"SET threads = {int(args.threads)}")
            con.execute("SET enable_progress_bar = false")
            con.register("tbl", table)
            started = time.perf_counter()
            con.execute(
                f"COPY (SELECT * FROM tbl) TO {sql_text(str(dd_path))} "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
            dd_secs = time.perf_counter() - started
        finally:
            con.close()

        datasets[ds] = {
            "rows": table.num_rows,
            "pyarrow_secs": round(pa_secs, 6),
            "pyarrow_bytes": pa_path.stat().st_size,
            "duckdb_secs": round(dd_secs, 6),
            "duckdb_bytes": dd_path.stat().st_size,
        }
        log(f"prepare {ds}: {datasets[ds]}")
        del table
    emit(out, {"datasets": datasets, "versions": versions()})
    return 0


# --------------------------------------------------------------------------------------------
# Self-test: synthetic data, a plain-Python reference, every engine through the real protocol
# --------------------------------------------------------------------------------------------

PROVIDERS = ["RXX", "RYY", "R1A", "RZZ"]  # RZZ's outpatient rows carry no patient identifier
COMMISSIONERS = ["00L", "13T", "X2Y", "15N"]
PODS = {
    "apc": ["EL", "NEL", "DC", "RP"],
    "op": ["OPFA", "OPFUP", "OPPROC"],
    "ec": ["AE", "AEUC"],
}
HRGS = ["FD01A", "FD02B", "FD10Z", "FE10Z", "AA22C", "WH50A", "F", "UZ01Z"]
TFCS = ["100", "110", "300", "420", "502"]
# Dates every data set gets, on both sides of financial-year and query boundaries.
BOUNDARY_DATES = [
    dt.date(2024, 3, 31), dt.date(2024, 4, 1), dt.date(2024, 6, 30), dt.date(2024, 7, 1),
    dt.date(2024, 8, 31), dt.date(2024, 9, 1), dt.date(2024, 9, 30), dt.date(2024, 10, 1),
]
SELFTEST_CASES: list[tuple[str, dict[str, str]]] = [
    ("Q1", {}),
    ("Q2", {}),
    ("Q3", {"provider": "RXX", "start": "2024-04-01", "end": "2024-06-30"}),
    ("Q3", {"provider": "RYY", "start": "2024-03-31", "end": "2024-04-01"}),
    ("Q4", {"chapter": "FD"}),
    ("Q4", {"chapter": "F"}),
    ("Q5", {}),
    ("Q6", {"provider": "RXX", "month": "2024-09"}),
    ("Q6", {"provider": "RYY", "month": "2024-03"}),
    ("Q6", {"provider": "R1A", "month": "2024-12"}),
    ("Q6", {"provider": "NOBODY", "month": "2024-09"}),
]


def _maybe(rng: random.Random, values: list[Any], null_rate: float) -> Any:
    return None if rng.random() < null_rate else rng.choice(values)


def synthetic_rows(seed: int = 20241) -> dict[str, list[dict[str, Any]]]:
    """A few thousand rows per dataset, as plain Python dicts (the reference's input)."""
    rng = random.Random(seed)
    first, span = dt.date(2023, 2, 1), (dt.date(2025, 5, 31) - dt.date(2023, 2, 1)).days
    # Patient identifiers: some strings are both an NHS number and a local id ('X1'...).
    nhs_pool = [f"9{n:09d}" for n in range(120)] + [f"X{n}" for n in range(15)]
    local_pool = [f"L{n:05d}" for n in range(150)] + [f"X{n}" for n in range(15)]
    sizes = {"apc": 2500, "op": 4000, "ec": 2500}
    data: dict[str, list[dict[str, Any]]] = {}
    for ds in DATASETS:
        rows = []
        for i in range(sizes[ds]):
            provider = PROVIDERS[i % len(PROVIDERS)] if i < 64 else rng.choice(PROVIDERS)
            if i < len(BOUNDARY_DATES) * len(PROVIDERS):
                date = BOUNDARY_DATES[i // len(PROVIDERS)]
            else:
                date = first + dt.timedelta(days=rng.randrange(span + 1))
            if ds == "op" and provider == "RZZ":
                nhs = local = None
            else:
                nhs = _maybe(rng, nhs_pool, 0.35)
                local = _maybe(rng, local_pool, 0.3)
            ages = [0, 4, 5, 89, 90, 104, rng.randrange(105)]
            age = None if rng.random() < 0.08 else rng.choice(ages)
            # A few prices so large that a float sum would lose pence (> 2**53 in total).
            price = rng.randrange(3 * 10**15) if rng.random() < 0.01 else rng.randrange(600_000)
            born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(25000))
            row = {
                "cds_unique_id": f"{ds.upper()}{i:08d}",
                "cds_applicable_datetime": dt.datetime(2024, 1, 1)
                + dt.timedelta(seconds=rng.randrange(10**7)),
                "provider_code": provider,
                "commissioner_code": _maybe(rng, COMMISSIONERS, 0.12),
                "nhs_number": nhs,
                "local_patient_id": local,
                "date_of_birth": None if rng.random() < 0.2 else born,
                "activity_date": date,
                "age_at_activity": age,
                "hrg": _maybe(rng, HRGS, 0.1),
                "pod": _maybe(rng, PODS[ds], 0.07),
                "base_price": price,
                "excess_bed_days": rng.randrange(6) if ds == "apc" else 0,
                "mff": Decimal(f"1.{rng.randrange(10**6):06d}"),
                "price": price,
                "pbr_excluded": rng.random() < 0.15,
                "warnings": rng.randrange(2**20),
                "restricted": rng.random() < 0.02,
            }
            if ds == "apc":
                row["episode_number"] = rng.randrange(1, 5)
                row["treatment_function_code"] = _maybe(rng, TFCS, 0.1)
                codes = [rng.choice(["I10", "E119", None]) for _ in range(rng.randrange(4))]
                row["secondary_diagnoses"] = None if rng.random() < 0.3 else codes
                row["spell_hrg"] = _maybe(rng, HRGS, 0.1)
            elif ds == "op":
                row["treatment_function_code"] = _maybe(rng, TFCS, 0.1)
            else:
                row["acuity"] = None if rng.random() < 0.1 else rng.randrange(1, 6)
                row["investigations"] = [rng.choice(["01", "24"]) for _ in range(rng.randrange(3))]
            rows.append(row)
        # One price of 2**53 + 1: it does not survive a trip through a float.
        rows[-1]["price"] = 2**53 + 1
        data[ds] = rows
    return data


def synthetic_table(ds: str, rows: list[dict[str, Any]]) -> Any:
    """The rows as a pyarrow Table with the stored schema's types for the columns used."""
    import pyarrow as pa

    code = pa.dictionary(pa.int32(), pa.utf8())
    fields = [
        pa.field("cds_unique_id", pa.utf8(), False),
        pa.field("cds_applicable_datetime", pa.timestamp("s"), False),
        pa.field("provider_code", code, False),
        pa.field("commissioner_code", code),
        pa.field("nhs_number", pa.utf8()),
        pa.field("local_patient_id", pa.utf8()),
        pa.field("date_of_birth", pa.date32()),
    ]
    if ds == "apc":
        fields += [
            pa.field("episode_number", pa.uint8()),
            pa.field("treatment_function_code", code),
            pa.field("secondary_diagnoses", pa.list_(pa.utf8())),
        ]
    elif ds == "op":
        fields += [pa.field("treatment_function_code", code)]
    else:
        fields += [pa.field("acuity", pa.uint8()), pa.field("investigations", pa.list_(pa.utf8()))]
    fields += [
        pa.field("activity_date", pa.date32(), False),
        pa.field("age_at_activity", pa.uint16()),
        pa.field("hrg", code),
    ]
    if ds == "apc":
        fields += [pa.field("spell_hrg", code)]
    fields += [
        pa.field("pod", code),
        pa.field("base_price", pa.int64(), False),
        pa.field("excess_bed_days", pa.int32(), False),
        pa.field("mff", pa.decimal128(10, 6), False),
        pa.field("price", pa.int64(), False),
        pa.field("pbr_excluded", pa.bool_(), False),
        pa.field("warnings", pa.uint32(), False),
        pa.field("restricted", pa.bool_(), False),
    ]
    schema = pa.schema(fields, metadata={"sus.dataset": ds})
    columns = []
    for f in schema:
        values = [r[f.name] for r in rows]
        if pa.types.is_dictionary(f.type):
            columns.append(pa.array(values, pa.utf8()).dictionary_encode())
        else:
            columns.append(pa.array(values, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def reference(query: str, p: Params, data: dict[str, list[dict[str, Any]]]) -> list[list[Any]]:
    """The query computed row by row in plain Python, straight from the definitions."""

    def month(d: dt.date) -> str:
        return f"{d.year:04d}-{d.month:02d}"

    def financial_year(d: dt.date) -> str:
        start = d.year if d.month >= 4 else d.year - 1
        return f"{start}-{(start + 1) % 100:02d}"

    def age_band(age: int | None) -> str | None:
        if age is None:
            return None
        if age >= 90:
            return "90+"
        lo = age // 5 * 5
        return f"{lo}-{lo + 4}"

    def chapter(hrg: str | None) -> str | None:
        return None if hrg is None else hrg[:2]

    groups: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    if query == "Q1":
        for ds in DATASETS:
            for r in data[ds]:
                groups[(r["provider_code"], month(r["activity_date"]))][0] += r["price"]
        return canonical(query, [[*k, v[0]] for k, v in groups.items()])
    if query == "Q2":
        for ds in DATASETS:
            for r in data[ds]:
                g = groups[(financial_year(r["activity_date"]), r["pod"])]
                g[0] += 1
                g[1] += r["price"]
        return canonical(query, [[*k, v[0], v[1]] for k, v in groups.items()])
    if query == "Q3":
        for r in data["op"]:
            if r["provider_code"] == p.provider and p.start <= r["activity_date"] <= p.end:
                g = groups[(r["treatment_function_code"],)]
                g[0] += 1
                g[1] += r["price"]
        return canonical(query, [[*k, v[0], v[1]] for k, v in groups.items()])
    if query == "Q4":
        for r in data["apc"]:
            if chapter(r["hrg"]) == p.chapter:
                g = groups[(r["commissioner_code"], age_band(r["age_at_activity"]))]
                g[0] += 1
                g[1] += r["price"]
        return canonical(query, [[*k, v[0], v[1]] for k, v in groups.items()])
    if query == "Q5":
        patients: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        for r in data["op"]:
            who = patients[r["provider_code"]]  # every provider with rows is a group
            if r["nhs_number"] is not None:
                who.add(("nhs", r["nhs_number"]))
            elif r["local_patient_id"] is not None:
                who.add(("local", r["provider_code"], r["local_patient_id"]))
        return canonical(query, [[k, len(v)] for k, v in patients.items()])
    if query == "Q6":
        for ds in DATASETS:
            for r in data[ds]:
                if r["provider_code"] != p.provider:
                    continue
                if month(r["activity_date"]) != month(p.month_start):
                    continue
                hrg = r["spell_hrg"] if ds == "apc" else r["hrg"]
                g = groups[(r["commissioner_code"], ds, r["pod"], hrg)]
                g[0] += 1
                g[1] += r["excess_bed_days"]
                g[2] += r["price"]
                g[3] += int(r["pbr_excluded"])
        return canonical(query, [[*k, *v] for k, v in groups.items()])
    raise ValueError(query)


class WorkerProcess:
    """A `peers.py worker` child, driven through the stdin/stdout protocol."""

    def __init__(self, engine: str, data: Path, threads: int, stderr_path: Path):
        self.stderr_path = stderr_path
        self.stderr = open(stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "worker", "--engine", engine,
             "--data", str(data), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker ended without answering; stderr: {self.stderr_tail()}")
        return json.loads(line)

    def ask(self, request: dict[str, Any] | str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        text = request if isinstance(request, str) else json.dumps(request)
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> tuple[int, str]:
        """Close stdin (EOF) and wait; returns the exit code and anything else on stdout."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        extra = self.proc.stdout.read()
        code = self.proc.wait(timeout=60)
        self.stderr.close()
        return code, extra

    def stderr_tail(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text()[-2000:]


def cmd_selftest(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="peers-selftest-"))
    root.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    passed = False
    try:
        data = synthetic_rows()
        ipc = root / "ipc"
        ipc.mkdir(exist_ok=True)
        tables = {}
        for ds in DATASETS:
            table = synthetic_table(ds, data[ds])
            tables[ds] = table
            path = str(ipc / f"{ds}.arrow")
            # prepare must take both IPC flavours: op is written as a stream.
            opener = pa.ipc.new_stream if ds == "op" else pa.ipc.new_file
            with opener(path, table.schema) as writer:
                for batch in table.to_batches(max_chunksize=1000):
                    writer.write_batch(batch)

        # prepare, as the harness runs it.
        out = root / "parquet"
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "prepare", "--ipc", str(ipc),
             "--out", str(out)],
            capture_output=True, text=True,
        )
        lines = proc.stdout.splitlines()
        if proc.returncode != 0 or len(lines) != 1:
            raise RuntimeError(
                f"prepare failed ({proc.returncode}): {proc.stdout!r} {proc.stderr[-2000:]}"
            )
        prepared = json.loads(lines[0])
        for ds in DATASETS:
            info = prepared["datasets"][ds]
            if info["rows"] != len(data[ds]):
                failures.append(f"prepare {ds}: {info['rows']} rows, expected {len(data[ds])}")
            for writer in ("pyarrow", "duckdb"):
                n = pq.ParquetFile(out / writer / f"{ds}.parquet").metadata.num_rows
                if n != len(data[ds]):
                    failures.append(f"prepare {ds}: {writer} file has {n} rows")

        # The same data in many small row groups, sorted by date, so that engines prune.
        small = root / "small-row-groups"
        small.mkdir(exist_ok=True)
        for ds in DATASETS:
            pq.write_table(tables[ds].sort_by("activity_date"), str(small / f"{ds}.parquet"),
                           compression="zstd", row_group_size=400)

        expected = [
            (q, params, reference(q, Params(q, params), data)) for q, params in SELFTEST_CASES
        ]
        layouts = [("prepare", out / "pyarrow"), ("small-row-groups", small)]
        timings: dict[str, float] = {}
        for engine in ENGINE_NAMES:
            for layout, folder in layouts:
                what = f"{engine}/{layout}"
                worker = WorkerProcess(engine, folder, 2, root / f"{engine}-{layout}.stderr")
                try:
                    ready = worker.ready
                    if (
                        ready.get("ready") is not True
                        or ready.get("engine") != engine
                        or ready.get("version") != prepared["versions"][engine]
                    ):
                        failures.append(f"{what}: bad ready line {ready}")
                        continue
                    for query, params, want in expected:
                        reply = worker.ask({"query": query, "params": params})
                        if "error" in reply:
                            failures.append(f"{what} {query} {params}: error {reply['error']}")
                            continue
                        if not isinstance(reply.get("ms"), (int, float)):
                            failures.append(f"{what} {query}: no ms in reply")
                        timings[engine] = timings.get(engine, 0.0) + reply.get("ms", 0.0)
                        if reply["rows"] != want:
                            failures.append(f"{what} {query} {params}: rows differ from the "
                                            f"reference\n{_diff(reply['rows'], want)}")
                    # Errors are reported and the worker carries on.
                    for bad in ('{"query": "Q9"}', "not json", '{"query": "Q3", "params": {}}'):
                        reply = worker.ask(bad)
                        if "error" not in reply:
                            failures.append(f"{what}: no error for {bad!r}: {reply}")
                    reply = worker.ask({"query": "Q1"})
                    if reply.get("rows") != expected[0][2]:
                        failures.append(f"{what}: Q1 after errors: {reply}")
                finally:
                    code, extra = worker.close()
                if code != 0 or extra:
                    failures.append(f"{what}: exit {code}, extra stdout {extra[:200]!r}")
        if failures:
            for f in failures:
                print(f"FAIL {f}", file=sys.stderr)
            print(f"selftest: FAILED ({len(failures)} failures); files kept in {root}")
            return 1
        total_rows = sum(len(v) for v in data.values())
        result_rows = sum(len(want) for _, _, want in expected)
        per_engine = ", ".join(f"{e} {timings[e]:.0f} ms" for e in ENGINE_NAMES)
        versions_ = prepared["versions"]
        print(
            f"selftest: OK: {len(ENGINE_NAMES)} engines x {len(SELFTEST_CASES)} cases x "
            f"{len(layouts)} layouts agree with the Python reference ({total_rows} input rows, "
            f"{result_rows} result rows per run; query time {per_engine}; "
            + ", ".join(f"{k} {v}" for k, v in versions_.items())
            + f"; {time.perf_counter() - started:.1f} s)"
        )
        passed = True
        return 0
    except Exception as e:  # noqa: BLE001 - a broken run is a failed self-test
        print(f"selftest: FAILED: {type(e).__name__}: {e}; files kept in {root}")
        return 1
    finally:
        # Kept for inspection after a failure (the path is printed) or with --keep.
        if passed and not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _diff(got: list[list[Any]], want: list[list[Any]]) -> str:
    got_t = {tuple(r) for r in got}
    want_t = {tuple(r) for r in want}
    extra = sorted(got_t - want_t, key=repr)[:5]
    missing = sorted(want_t - got_t, key=repr)[:5]
    return f"    {len(got)} rows vs {len(want)}; unexpected {extra}; missing {missing}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    prepare = sub.add_parser("prepare", help="write Parquet from Arrow IPC with pyarrow and DuckDB")
    prepare.add_argument("--ipc", required=True, help="folder with apc.arrow, op.arrow, ec.arrow")
    prepare.add_argument(
        "--out", required=True, help="writes OUT/pyarrow/*.parquet and OUT/duckdb/*.parquet"
    )
    prepare.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")

    worker = sub.add_parser("worker", help="answer queries on stdin with one engine")
    worker.add_argument("--engine", required=True, choices=ENGINE_NAMES)
    worker.add_argument(
        "--data", required=True, help="folder with apc.parquet, op.parquet, ec.parquet"
    )
    worker.add_argument("--threads", type=int, default=2)

    selftest = sub.add_parser("selftest", help="check every engine against a Python reference")
    selftest.add_argument("--keep", help="build the data here and keep it (default: a temp folder)")

    args = parser.parse_args(argv)
    if getattr(args, "threads", 1) < 1:
        parser.error("--threads must be at least 1")
    commands = {"prepare": cmd_prepare, "worker": cmd_worker, "selftest": cmd_selftest}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
