"""The Tableau fake's storage engine: real .hyper files changed with the Hyper API.

`HyperStore` does to a stored extract what Tableau Server does to a live-to-Hyper datasource:
replace it, append to it, and apply an `update_hyper_data` action batch (insert, delete, upsert,
replace; conditions eq/neq/gt/gte/lt/lte/and/or/not against a source column or a constant) as
one all-or-nothing change: the batch runs on a copy that replaces the stored file only when
every action succeeded (a delete's source table may hold many rows: every target row matching
any of them goes). A test can stop a batch part-way (`fail_after`) to check that a failure
between its actions leaves the stored file as it was. It also renders the .tds Tableau serves
when a datasource is downloaded without its extract. Action shapes: https://help.tableau.com/current/api/rest_api/en-us/REST/rest_api_how_to_update_data_to_hyper.htm
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from tableauhyperapi import (
    Connection,
    CreateMode,
    HyperException,
    HyperProcess,
    TableName,
    Telemetry,
    TypeTag,
    escape_name,
    escape_string_literal,
)

_CMP = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LOCAL_TYPES = {
    TypeTag.BOOL: "boolean",
    TypeTag.SMALL_INT: "integer",
    TypeTag.INT: "integer",
    TypeTag.BIG_INT: "integer",
    TypeTag.DOUBLE: "real",
    TypeTag.FLOAT: "real",
    TypeTag.NUMERIC: "real",
    TypeTag.TEXT: "string",
    TypeTag.VARCHAR: "string",
    TypeTag.CHAR: "string",
    TypeTag.DATE: "date",
    TypeTag.TIMESTAMP: "datetime",
    TypeTag.TIMESTAMP_TZ: "datetime",
}
# OLE DB type codes Tableau writes as <remote-type>.
_REMOTE_TYPES = {
    TypeTag.BOOL: 11,
    TypeTag.SMALL_INT: 2,
    TypeTag.INT: 3,
    TypeTag.BIG_INT: 20,
    TypeTag.FLOAT: 4,
    TypeTag.DOUBLE: 5,
    TypeTag.NUMERIC: 131,
    TypeTag.TEXT: 129,
    TypeTag.DATE: 133,
    TypeTag.TIMESTAMP: 135,
    TypeTag.TIMESTAMP_TZ: 7,
}


class ActionError(Exception):
    """An action batch that Tableau would fail; the message becomes the job's notes."""


class BatchFault(ActionError):
    """The fault a test injected part-way through a batch; its working copy was discarded."""

    def __init__(self, applied: int, changed: int) -> None:
        super().__init__(f"Injected fault after {applied} action(s) of the batch")
        self.applied = applied
        self.changed = changed  # rows the applied actions had changed in the discarded copy


def _literal(const: dict[str, Any]) -> str:
    kind, value = const.get("type"), const.get("v")
    if kind == "string":
        return escape_string_literal(str(value))
    if kind in ("integer", "double"):
        return repr(float(value)) if kind == "double" else str(int(value))
    if kind == "boolean":
        return "TRUE" if value in (True, "true") else "FALSE"
    if kind == "datetime":
        return f"CAST({escape_string_literal(str(value))} AS TIMESTAMP)"
    if kind == "date":
        return f"DATE {escape_string_literal(str(value))}"
    raise ActionError(f"Unsupported const type {kind!r}")


def condition_sql(cond: dict[str, Any], target: str, source: str | None) -> str:
    """Translate a condition object into SQL over aliases `target` and `source`."""
    op = cond.get("op")
    if op in ("and", "or"):
        args = cond.get("args") or []
        if not args:
            raise ActionError(f"Condition {op!r} needs args")
        return "(" + f" {op.upper()} ".join(condition_sql(a, target, source) for a in args) + ")"
    if op == "not":
        return f"(NOT {condition_sql(cond['arg'], target, source)})"
    if op not in _CMP:
        raise ActionError(f"Unsupported condition op {op!r}")
    left = f"{target}.{escape_name(cond['target-col'])}"
    if "source-col" in cond:
        if source is None:
            raise ActionError("Condition uses source-col but the action has no source-table")
        right = f"{source}.{escape_name(cond['source-col'])}"
    elif "const" in cond:
        right = _literal(cond["const"])
    else:
        raise ActionError("Condition needs source-col or const")
    return f"{left} {_CMP[op]} {right}"


def _condition_columns(cond: dict[str, Any]) -> set[str]:
    if cond.get("op") in ("and", "or"):
        return set().union(*(_condition_columns(a) for a in cond.get("args") or []))
    if cond.get("op") == "not":
        return _condition_columns(cond["arg"])
    return {cond["source-col"]} if "source-col" in cond else set()


class HyperStore:
    """Stores one .hyper file per datasource and changes them like Tableau does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()
        self._hyper: HyperProcess | None = None

    def _process(self) -> HyperProcess:
        if self._hyper is None:
            self._hyper = HyperProcess(
                Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_config": ""}
            )
        return self._hyper

    def close(self) -> None:
        with self._lock:
            if self._hyper is not None:
                self._hyper.close()
                self._hyper = None

    def path(self, ds_id: str) -> Path:
        return self.root / f"{ds_id}.hyper"

    def _connect(self, path: Path) -> Connection:
        return Connection(self._process().endpoint, str(path), CreateMode.NONE)

    def columns(self, ds_id: str) -> list[tuple[str, TypeTag, Any]]:
        """(name, type tag, SqlType) of "Extract"."Extract"."""
        with self._lock, self._connect(self.path(ds_id)) as conn:
            table = conn.catalog.get_table_definition(TableName("Extract", "Extract"))
            return [(c.name.unescaped, c.type.tag, c.type) for c in table.columns]

    def query(self, ds_id: str, sql: str) -> list[list[Any]]:
        """Run a query on a stored extract; `{table}` stands for "Extract"."Extract"."""
        with self._lock, self._connect(self.path(ds_id)) as conn:
            return conn.execute_list_query(sql.format(table=str(TableName("Extract", "Extract"))))

    def check_extract(self, file: Path) -> None:
        """Refuse files Hyper cannot open or that lack "Extract"."Extract"."""
        try:
            with self._lock, self._connect(file) as conn:
                if not conn.catalog.has_table(TableName("Extract", "Extract")):
                    raise ActionError('The .hyper file has no table "Extract"."Extract"')
        except HyperException as exc:
            raise ActionError(f"Not a readable .hyper file: {exc.main_message}") from exc

    def store(self, ds_id: str, file: Path) -> None:
        """Create or overwrite the datasource's extract with `file`."""
        self.check_extract(file)
        with self._lock:
            tmp = self.root / f".{uuid.uuid4().hex}.hyper"
            shutil.copyfile(file, tmp)
            os.replace(tmp, self.path(ds_id))

    def append(self, ds_id: str, file: Path) -> None:
        """Publish mode Append: add the file's rows to the stored extract."""
        actions = [{"action": "insert", "source-schema": "Extract", "source-table": "Extract",
                    "target-schema": "Extract", "target-table": "Extract"}]  # fmt: skip
        self.apply(ds_id, actions, file)

    def apply(
        self,
        ds_id: str,
        actions: list[dict[str, Any]],
        payload: Path | None,
        *,
        fail_after: int | None = None,
    ) -> int:
        """Apply an action batch all-or-nothing; return the number of rows changed.

        The actions run on a copy of the stored file, which replaces it (an atomic rename)
        only after the last action succeeded; any error discards the copy.

        Args:
            ds_id: The datasource whose extract the batch changes.
            actions: The batch's actions, applied in order.
            payload: The uploaded .hyper the actions' source tables are read from.
            fail_after: Test hook: apply only this many actions to the copy, then raise
                `BatchFault` (after the last one if the batch has fewer).

        Raises:
            ActionError: An action Tableau would refuse, or Hyper failed; nothing changed.
            BatchFault: The injected fault (`fail_after`); nothing changed.
        """
        with self._lock, tempfile.TemporaryDirectory(dir=self.root) as work:
            target = Path(work) / "target.hyper"
            shutil.copyfile(self.path(ds_id), target)
            changed = 0
            try:
                with self._connect(target) as conn:
                    if payload is not None:
                        conn.catalog.attach_database(str(payload), alias="payload")
                    for action in actions[:fail_after]:
                        changed += self._apply_one(conn, action, payload is not None)
                    if fail_after is not None:
                        raise BatchFault(min(fail_after, len(actions)), changed)
                    if payload is not None:
                        conn.catalog.detach_database("payload")
            except HyperException as exc:
                raise ActionError(f"Hyper refused the action batch: {exc.main_message}") from exc
            # Only here, after every action, does the stored file change.
            os.replace(target, self.path(ds_id))
            return changed

    def _apply_one(self, conn: Connection, action: dict[str, Any], has_payload: bool) -> int:
        kind = action.get("action")
        target = TableName(
            "target", action.get("target-schema", "Extract"), action.get("target-table", "")
        )
        if not conn.catalog.has_table(target):
            raise ActionError(f"Target table {target} does not exist")
        source: TableName | None = None
        if "source-table" in action:
            if not has_payload:
                raise ActionError("The action names a source-table but no payload was uploaded")
            source = TableName(
                "payload", action.get("source-schema", "public"), action["source-table"]
            )
            if not conn.catalog.has_table(source):
                raise ActionError(f"Source table {source} does not exist in the payload")
        tgt_cols = [c.name.unescaped for c in conn.catalog.get_table_definition(target).columns]
        src_cols = (
            [c.name.unescaped for c in conn.catalog.get_table_definition(source).columns]
            if source
            else []
        )

        def insert() -> int:
            if source is None:
                raise ActionError(f"{kind} needs a source-table")
            extra = [c for c in src_cols if c not in tgt_cols]
            if extra:
                raise ActionError(f"Source columns {extra} do not exist in the target table")
            names = ", ".join(escape_name(c) for c in src_cols)
            return conn.execute_command(
                f"INSERT INTO {target} ({names}) SELECT {names} FROM {source}"
            )

        def delete_matching(cond: dict[str, Any]) -> int:
            where = condition_sql(cond, "t", "s" if source else None)
            if source is None:
                return conn.execute_command(f"DELETE FROM {target} AS t WHERE {where}")
            return conn.execute_command(
                f"DELETE FROM {target} AS t "
                f"WHERE EXISTS (SELECT 1 FROM {source} AS s WHERE {where})"
            )

        if kind == "insert":
            return insert()
        if kind == "delete":
            cond = action.get("condition")
            if not cond:
                raise ActionError("delete needs a condition")
            extra = set(src_cols) - _condition_columns(cond)
            if source is not None and extra:
                # Tableau's documented rule: a delete's source table holds only the columns
                # its condition uses.
                raise ActionError(f"delete source table has columns {sorted(extra)} not used")
            return delete_matching(cond)
        if kind == "upsert":
            cond = action.get("condition")
            if not cond or source is None:
                raise ActionError("upsert needs a source-table and a condition")
            delete_matching(cond)  # full-row upsert: the source row replaces each match
            return insert()
        if kind == "replace":
            conn.execute_command(f"DELETE FROM {target}")
            return insert()
        raise ActionError(f"Unsupported action {kind!r}")

    def tds(self, ds_id: str, name: str) -> str:
        """The .tds Tableau serves for a datasource published from a .hyper file."""
        records = []
        for ordinal, (col, tag, sql_type) in enumerate(self.columns(ds_id)):
            extra = ""
            if tag == TypeTag.NUMERIC:
                extra = (
                    f"<precision>{sql_type.precision}</precision><scale>{sql_type.scale}</scale>"
                )
            records.append(
                "<metadata-record class='column'>"
                f"<remote-name>{escape(col)}</remote-name>"
                f"<remote-type>{_REMOTE_TYPES.get(tag, 129)}</remote-type>"
                f"<local-name>[{escape(col)}]</local-name>"
                "<parent-name>[Extract]</parent-name>"
                f"<remote-alias>{escape(col)}</remote-alias>"
                f"<ordinal>{ordinal}</ordinal>"
                f"<local-type>{_LOCAL_TYPES.get(tag, 'string')}</local-type>"
                f"{extra}<contains-null>true</contains-null>"
                "</metadata-record>"
            )
        return (
            "<?xml version='1.0' encoding='utf-8' ?>\n"
            f"<datasource formatted-name='federated.{ds_id[:8]}' inline='true' version='18.1' "
            "xmlns:user='http://www.tableausoftware.com/xml/user'>"
            "<connection class='federated'><named-connections>"
            f"<named-connection caption='{escape(name)}' name='hyper.{ds_id[:8]}'>"
            f"<connection class='hyper' dbname='Data/Extracts/{ds_id}.hyper' schema='Extract' "
            "tablename='Extract' username='tableau_internal_user' />"
            "</named-connection></named-connections>"
            f"<relation connection='hyper.{ds_id[:8]}' name='Extract' table='[Extract].[Extract]' "
            "type='table' />"
            f"<metadata-records>{''.join(records)}</metadata-records>"
            "</connection></datasource>"
        )
