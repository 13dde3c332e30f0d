"""What a staging collection would cost on a real Chroma server (#12): a run of N records written
into a fresh collection and swapped in (drop the live one, rename), against what a re-run does
today, an upsert of the same records into the live collection. All three timed in one run.

    .venv/bin/python benches/python/staging_swap.py N DIMENSION .venv/bin/chroma
"""
import subprocess, sys, time, tempfile, socket, random
import chromadb

N, DIM = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
d = tempfile.mkdtemp()
srv = subprocess.Popen([sys.argv[3], "run", "--path", d, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        c = chromadb.HttpClient(host="127.0.0.1", port=port); c.heartbeat(); break
    except Exception:
        time.sleep(0.2)
rnd = random.Random(1)
ids = [f"works:book.txt:{i}" for i in range(N)]
docs = [("word " * 80) + str(i) for i in range(N)]
embs = [[rnd.random() for _ in range(DIM)] for _ in range(N)]
metas = [{"source": "book.txt", "chunk_index": i} for i in range(N)]
B = c.get_max_batch_size()
def write(coll, op):
    for a in range(0, N, B):
        getattr(coll, op)(ids=ids[a:a+B], documents=docs[a:a+B], embeddings=embs[a:a+B], metadatas=metas[a:a+B])
def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t
live = c.create_collection("p_works", metadata={"hnsw:space": "cosine"})
first = timed(lambda: write(live, "add"))
upsert = timed(lambda: write(live, "upsert"))
def staged():
    st = c.create_collection("p_works__staging", metadata={"hnsw:space": "cosine"})
    write(st, "add")
    c.delete_collection("p_works")
    st.modify(name="p_works")
staging = timed(staged)
swap = timed(lambda: (c.create_collection("xyz"), c.delete_collection("xyz")))
print(f"N={N} dim={DIM} batch={B}: first write {first:.2f}s; re-run upsert into the live collection {upsert:.2f}s; "
      f"staging (write fresh, drop old, rename) {staging:.2f}s; create+drop of an empty collection {swap*1000:.0f} ms")
srv.terminate(); srv.wait()
