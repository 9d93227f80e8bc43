"""Processes one of the day's files: instance N of the fan-out takes file N."""
import hashlib
import json
import os

task_input = json.load(open(os.environ["ORK_INPUT"]))
index = int(os.environ["ORK_PARALLEL_INDEX"])
name = task_input["files"][index]
rows = int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % 1000
print(f"instance {index} of {os.environ['ORK_PARALLEL_COUNT']}: {name} has {rows} rows")
json.dump({"file": name, "rows": rows}, open(os.environ["ORK_OUTPUT"], "w"))
