"""The floor of a first ingestion into a Chroma server: the records persona-ingest wrote into
COLLECTIONS, read back (not timed) and written again into new collections of the same server by
Chroma's own Python client, in batches of the server's max_batch_size, halved while the server
refuses a batch for its size (413: 5,461 vectors of 1,536 floats exceed its payload limit), timed. What no ingestion
into that server can beat; `cargo bench --bench incremental` prints the engine's first run beside
it.

    python chroma_floor.py HOST PORT COLLECTION...

Prints one JSON line: {"seconds": ..., "records": ..., "batch": ...}.
"""
import json
import sys
import time

import chromadb

host, port, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
client = chromadb.HttpClient(host=host, port=port)
batch = client.get_max_batch_size()
loaded = []
for name in names:
    source = client.get_collection(name, embedding_function=None)
    got = source.get(include=["documents", "metadatas", "embeddings"])
    loaded.append((name, source.metadata, got))

started = time.perf_counter()
records = 0
for name, metadata, got in loaded:
    target = client.create_collection(f"floor_{name}", metadata=metadata, embedding_function=None)
    ids, documents, metadatas = got["ids"], got["documents"], got["metadatas"]
    embeddings = [list(map(float, e)) for e in got["embeddings"]]
    at = 0
    while at < len(ids):
        try:
            target.add(
                ids=ids[at:at + batch],
                documents=documents[at:at + batch],
                metadatas=metadatas[at:at + batch],
                embeddings=embeddings[at:at + batch],
            )
        except Exception as e:
            if "too large" not in str(e).lower() or batch == 1:
                raise
            batch //= 2
            continue
        at += batch
    records += len(ids)
print(json.dumps({"seconds": time.perf_counter() - started, "records": records, "batch": batch}))
