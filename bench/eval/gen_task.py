#!/usr/bin/env python3
"""Generates a retrieval task directory for bench/eval/run.sh.

Documents are 20-40 words drawn (seeded) from the vocabulary of
/usr/share/common-licenses; each query is 6 words of one document, which is
its single relevant document. Usage: gen_task.py DIR DOCS QUERIES
"""
import json, os, random, re, sys

out, n_docs, n_queries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
words = sorted({w.lower() for f in os.listdir("/usr/share/common-licenses")
                for w in re.findall(r"[A-Za-z]{3,}", open(os.path.join("/usr/share/common-licenses", f), errors="replace").read())})
rng = random.Random(42)
os.makedirs(os.path.join(out, "qrels"), exist_ok=True)
docs = []
with open(os.path.join(out, "corpus.jsonl"), "w") as f:
    for i in range(n_docs):
        d = rng.choices(words, k=rng.randint(20, 40))
        docs.append(d)
        f.write(json.dumps({"id": f"d{i}", "text": " ".join(d)}) + "\n")
with open(os.path.join(out, "queries.jsonl"), "w") as fq, open(os.path.join(out, "qrels", "test.tsv"), "w") as fr:
    fr.write("query-id\tcorpus-id\tscore\n")
    for q in range(n_queries):
        i = rng.randrange(n_docs)
        start = rng.randrange(len(docs[i]) - 6)
        fq.write(json.dumps({"id": f"q{q}", "text": " ".join(docs[i][start:start + 6])}) + "\n")
        fr.write(f"q{q}\td{i}\t1\n")
with open(os.path.join(out, "task.json"), "w") as f:
    json.dump({"type": "retrieval", "name": "BenchRetrieval", "instruction": "Given a query, retrieve documents that answer the query",
               "languages": ["eng-Latn"]}, f)
print(f"{len(words)} words, {n_docs} documents, {n_queries} queries -> {out}", file=sys.stderr)
