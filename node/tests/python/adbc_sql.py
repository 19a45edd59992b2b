"""Runs SQL on a sus-cluster node with the ADBC Flight SQL driver, as an analyst's notebook would.

    python3 adbc_sql.py HOST:PORT CA.pem USER PASSWORD

Prints one JSON object: the tables the driver lists (with their columns), the answers of a few
statements (plain and prepared), and the error of a statement that changes data. Used by
node/tests/sql.rs; docs/sql.md shows the same calls.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions

addr, ca, user, password = sys.argv[1:5]
with open(ca) as f:
    pem = f.read()
conn = flightsql.connect(
    f"grpc+tls://{addr}",
    db_kwargs={
        DatabaseOptions.TLS_ROOT_CERTS.value: pem,
        "username": user,
        "password": password,
    },
)

objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
tables = {}
for catalog in objects:
    for schema in catalog["catalog_db_schemas"] or []:
        for table in schema["db_schema_tables"] or []:
            name = f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'
            tables[name] = [c["column_name"] for c in table["table_columns"] or []]
op_schema = conn.adbc_get_table_schema("op", catalog_filter="sus", db_schema_filter="public")

answers = {}
with conn.cursor() as cur:
    cur.execute("SELECT count(*) AS n, sum(price) AS pence FROM op")
    answers["op"] = cur.fetch_arrow_table().to_pylist()
    cur.execute(
        "SELECT commissioner_code, count(*) AS n, sum(price) AS pence FROM ec "
        "GROUP BY commissioner_code ORDER BY commissioner_code"
    )
    answers["ec_by_commissioner"] = cur.fetch_arrow_table().to_pylist()
    # A prepared statement (ActionCreatePreparedStatement, then GetFlightInfo and DoGet).
    cur.adbc_prepare("SELECT count(*) AS n FROM apc WHERE price > 0")
    cur.execute("SELECT count(*) AS n FROM apc WHERE price > 0")
    answers["apc_priced"] = cur.fetch_arrow_table().to_pylist()
    try:
        cur.execute("DROP TABLE op")
        refused = None
    except Exception as e:  # the driver raises its own DB-API error classes
        refused = str(e)

print(json.dumps({
    "tables": tables,
    "op_columns": op_schema.names,
    "answers": answers,
    "refused": refused,
}, default=str))
