"""Runs SQL on a sus-cluster node with the ADBC Flight SQL driver, as an analyst's notebook would.

    python3 adbc_sql.py HOST:PORT CA.pem PASSWORD PROVIDER_USER PSEUDO_USER ANON_USER FREEZE OUT.arrows

Every user has PASSWORD. Prints one JSON object: the tables the driver lists (with columns), the
answers of a grouped statement (plain and prepared), a frozen view, the pseudonymised user's
filtered record-level statement (whose received table is also written to OUT.arrows, for the
caller to search every byte for clear identifiers), the anonymised user's grouped statement,
and the errors of forbidden statements. Used by node/tests/sql.rs; docs/sql.md shows the calls.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
from adbc_driver_flightsql import DatabaseOptions

addr, ca, password, provider_user, pseudo_user, anon_user, freeze, out = sys.argv[1:9]
with open(ca) as f:
    pem = f.read()


def connect(user):
    return flightsql.connect(
        f"grpc+tls://{addr}",
        db_kwargs={
            DatabaseOptions.TLS_ROOT_CERTS.value: pem,
            "username": user,
            "password": password,
        },
        autocommit=True,
    )


def refused(cur, sql):
    try:
        cur.execute(sql)
        cur.fetch_arrow_table()
        return None
    except Exception as e:  # the driver raises its own DB-API error classes
        return str(e)


result = {}
with connect(provider_user) as conn:
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    tables = {}
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                name = f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'
                tables[name] = [c["column_name"] for c in table["table_columns"] or []]
    result["tables"] = tables
    result["op_columns"] = conn.adbc_get_table_schema(
        "op", catalog_filter="sus", db_schema_filter="public"
    ).names
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n, sum(price) AS pence FROM op")
        result["op"] = cur.fetch_arrow_table().to_pylist()
        cur.execute(
            "SELECT commissioner_code, count(*) AS n, sum(price) AS pence FROM ec "
            "GROUP BY commissioner_code ORDER BY commissioner_code"
        )
        result["ec_by_commissioner"] = cur.fetch_arrow_table().to_pylist()
        # A prepared statement (ActionCreatePreparedStatement, then GetFlightInfo and DoGet).
        cur.adbc_prepare("SELECT count(*) AS n FROM apc WHERE price > 0")
        cur.execute("SELECT count(*) AS n FROM apc WHERE price > 0")
        result["apc_priced"] = cur.fetch_arrow_table().to_pylist()
        cur.execute(f"SELECT count(*) AS n FROM op_at('{freeze}')")
        result["op_frozen"] = cur.fetch_arrow_table().to_pylist()
        result["refused_drop"] = refused(cur, "DROP TABLE op")

with connect(pseudo_user) as conn, conn.cursor() as cur:
    cur.execute(
        "SELECT cds_unique_id, nhs_number, local_patient_id, date_of_birth, postcode, price "
        "FROM apc WHERE price > 0 AND nhs_number IS NOT NULL LIMIT 500"
    )
    rows = cur.fetch_arrow_table()
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    result["pseudonymised"] = {"rows": rows.num_rows, "nhs_numbers": rows.column("nhs_number").to_pylist()[:20]}

with connect(anon_user) as conn, conn.cursor() as cur:
    # By commissioner: below England as a whole by dataset, period and POD, so not exempt.
    cur.execute(
        "SELECT commissioner_code, count(*) AS activity, sum(price) AS pence FROM apc "
        "GROUP BY commissioner_code"
    )
    result["anonymised"] = cur.fetch_arrow_table().to_pylist()
    result["refused_anonymised"] = refused(cur, "SELECT nhs_number FROM apc")

print(json.dumps(result, default=str))
