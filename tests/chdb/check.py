"""Runs the SQL of docs/clickhouse.md on chDB over one audit log; prints the answers as JSON.

usage: check.py DOC LOG DBDIR

The blocks of DOC are the fenced ones whose first line is `-- check: NAME`: `schema` is run
first, then `load` with the log's lines after it, then every other block as a query. The output
is one JSON object: NAME -> the rows of that query (objects, column name -> value).
"""

import json
import re
import sys

import chdb.session


def blocks(doc):
    found = {}
    for body in re.findall(r"^```sql\n(.*?)^```", doc, re.S | re.M):
        first, _, rest = body.partition("\n")
        m = re.fullmatch(r"-- check: (\w+)", first.strip())
        if m:
            if m.group(1) in found:
                sys.exit(f"check.py: block {m.group(1)} appears twice")
            found[m.group(1)] = rest.strip()
    for need in ("schema", "load"):
        if need not in found:
            sys.exit(f"check.py: no block `-- check: {need}`")
    return found


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    doc_path, log_path, db = sys.argv[1:]
    with open(doc_path, encoding="utf-8") as f:
        sql = blocks(f.read())
    with open(log_path, encoding="utf-8") as f:
        log = f.read()
    sess = chdb.session.Session(db)
    sess.query(sql.pop("schema"))
    sess.query(sql.pop("load") + "\n" + log)
    out = {}
    for name, query in sql.items():
        res = sess.query(
            query + "\nSETTINGS output_format_json_quote_64bit_integers = 0", "JSON"
        )
        out[name] = json.loads(res.bytes())["data"]
    sess.close()
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


main()
