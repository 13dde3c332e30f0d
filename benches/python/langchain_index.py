"""LangChain's indexing API on a persona's corpus, as `cargo bench --bench incremental` runs it
beside persona-ingest: the works split as persona-ingest splits them by default (1,600
characters, about 400 tokens, 160 of overlap), each quote and the profile a document, embedded by
OpenAIEmbeddings at the benchmark's stand-in, written into a collection of the same Chroma server,
with index() and its SQL record manager (by source file, cleanup "scoped_full" or "incremental"
as asked). Run twice with the same record database: the second run is LangChain's re-run of an
unchanged corpus.

Prints one JSON line: the seconds from reading the files to index()'s return (imports left out)
and index()'s own counts.

    python langchain_index.py '{"corpus": ..., "persona": ..., "host": ..., "port": ...,
        "base_url": ..., "model": ..., "record_db": ..., "batch": ..., "cleanup": ...}'
"""
import json
import pathlib
import sys
import time

import chromadb
from langchain.indexes import SQLRecordManager, index
from langchain_chroma import Chroma
from langchain_core.documents import Document
from langchain_openai import OpenAIEmbeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter

args = json.loads(sys.argv[1])
persona = args["persona"]
root = pathlib.Path(args["corpus"])

started = time.perf_counter()
works = [
    Document(path.read_text(encoding="utf-8", errors="replace"), metadata={"source": str(path)})
    for path in sorted((root / "data" / persona / "works").glob("*.txt"))
]
splitter = RecursiveCharacterTextSplitter(chunk_size=1600, chunk_overlap=160)
documents = splitter.split_documents(works)
quotes = root / "data" / persona / "quotes" / "all_quotes.jsonl"
if quotes.exists():
    for line in quotes.read_text(encoding="utf-8").splitlines():
        if line.strip():
            documents.append(Document(json.loads(line)["text"], metadata={"source": str(quotes)}))
profile = root / "personas" / persona / "profile.md"
if profile.exists():
    documents.append(Document(profile.read_text(encoding="utf-8"), metadata={"source": str(profile)}))

embeddings = OpenAIEmbeddings(
    model=args["model"],
    base_url=args["base_url"],
    api_key="sk-bench",
    # Send the texts, as persona-ingest does, not tiktoken's token ids.
    check_embedding_ctx_length=False,
    chunk_size=args["batch"],
)
client = chromadb.HttpClient(host=args["host"], port=args["port"])
collection = f"langchain_{args['cleanup']}_{persona}"
store = Chroma(
    collection_name=collection,
    client=client,
    embedding_function=embeddings,
    collection_metadata={"hnsw:space": "cosine"},
)
manager = SQLRecordManager(f"chroma/{collection}", db_url=f"sqlite:///{args['record_db']}")
manager.create_schema()
result = index(
    documents,
    manager,
    store,
    cleanup=args["cleanup"],
    source_id_key="source",
    batch_size=args["batch"],
)
print(json.dumps({"seconds": time.perf_counter() - started, "documents": len(documents), **result}))
