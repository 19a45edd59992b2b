"""Reads a scoped extract from a sus-cluster node over Arrow Flight with pyarrow.

    python3 flight_extract.py HOST:PORT CA.pem USER PASSWORD DATASET

Prints one JSON object: the datasets the node lists, and the extract's rows, columns and
distinct provider codes. Used by node/tests/operator.rs; the README shows the same calls.
"""
import json
import sys

import pyarrow as pa
import pyarrow.flight as flight

addr, ca, user, password, dataset = sys.argv[1:6]
with open(ca, "rb") as f:
    client = flight.FlightClient(f"grpc+tls://{addr}", tls_root_certs=f.read())
token = client.authenticate_basic_token(user, password)
options = flight.FlightCallOptions(headers=[token])

datasets = sorted(info.descriptor.path[0].decode() for info in client.list_flights(options=options))
info = client.get_flight_info(flight.FlightDescriptor.for_path(dataset), options)
# One endpoint per shard; any node serves any ticket.
tables = [client.do_get(endpoint.ticket, options).read_all() for endpoint in info.endpoints]
table = pa.concat_tables(tables) if tables else info.schema.empty_table()
providers = sorted(set(table.column("provider_code").to_pylist())) if table.num_rows else []
print(json.dumps({
    "datasets": datasets,
    "rows": table.num_rows,
    "columns": table.column_names,
    "providers": providers,
    "nhs_numbers": table.column("nhs_number").to_pylist()[:20] if table.num_rows else [],
}))
