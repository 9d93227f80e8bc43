"""Joins the fan-out: `results` is the array of every `process` output, in index order."""
import json
import os

task_input = json.load(open(os.environ["ORK_INPUT"]))
results = task_input["results"]
total = sum(r["rows"] for r in results)
for r in results:
    print(f"{r['file']:>28}  {r['rows']:>4} rows")
print(f"{'total':>28}  {total:>4} rows")
json.dump({"title": task_input["title"], "files": len(results), "total_rows": total},
          open(os.environ["ORK_OUTPUT"], "w"))
