"""A multilingual benchmark corpus from text Debian ships: the translations of every
gettext catalogue under /usr/share/locale, grouped per locale into documents of
about 2 KB, written as JSONL ({"text": ...}) up to MAX_BYTES of text.

    .venv/bin/python make_corpus.py OUT.jsonl [MAX_BYTES]
"""
import json
import os
import struct
import sys


def read_mo(path):
    """The translations (msgstr, plural forms split) of one .mo file; a string that
    is not valid UTF-8 is skipped (catalogues in legacy encodings)."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 28:
        return []
    magic = struct.unpack_from("<I", buf, 0)[0]
    if magic == 0x950412DE:
        fmt = "<I"
    elif magic == 0xDE120495:
        fmt = ">I"
    else:
        return []
    n, table = struct.unpack_from(fmt, buf, 8)[0], struct.unpack_from(fmt, buf, 16)[0]
    res = []
    for i in range(n):
        length, off = (struct.unpack_from(fmt, buf, table + 8 * i + k)[0] for k in (0, 4))
        if off + length > len(buf):
            break
        s = buf[off:off + length].decode("utf-8", errors="replace")
        if "\ufffd" not in s:
            res.extend(f for f in s.split("\0") if f)
    return res


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make_corpus.py OUT.jsonl [MAX_BYTES]")
    out = sys.argv[1]
    max_bytes = float(sys.argv[2]) if len(sys.argv) > 2 else 8e6

    root = "/usr/share/locale"
    per_locale = []
    for lang in sorted(os.listdir(root)):
        d = os.path.join(root, lang, "LC_MESSAGES")
        if not os.path.isdir(d):
            continue
        docs, doc, doc_bytes, seen = [], "", 0, set()
        for name in sorted(x for x in os.listdir(d) if x.endswith(".mo")):
            for m in read_mo(os.path.join(d, name)):
                if m in seen:
                    continue
                seen.add(m)
                doc_bytes += (1 if doc else 0) + len(m.encode("utf-8"))
                doc += ("\n" if doc else "") + m
                if doc_bytes >= 2000:
                    docs.append(doc)
                    doc, doc_bytes = "", 0
        if doc:
            docs.append(doc)
        per_locale.append(docs)

    # Round-robin over locales so that any prefix of the file is multilingual.
    lines, nbytes, i = [], 0, 0
    while nbytes < max_bytes:
        any_doc = False
        for docs in per_locale:
            if i < len(docs) and nbytes < max_bytes:
                # Compact and unescaped: the same bytes as the former make_corpus.js.
                lines.append(json.dumps({"text": docs[i]}, ensure_ascii=False, separators=(",", ":")))
                nbytes += len(docs[i].encode("utf-8"))
                any_doc = True
        if not any_doc:
            break
        i += 1
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print(f"make_corpus: {len(lines)} texts, {nbytes} bytes of text, {len(per_locale)} locales", file=sys.stderr)


if __name__ == "__main__":
    main()
