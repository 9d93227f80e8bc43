import json
import os
import sys
import time

spec = json.load(open(os.environ["ORK_INPUT"]))
step = spec["step"]
index = spec.get("index", 0)
for i in range(4):
    print(f"{step}: batch {i + 1} of 4", flush=True)
    time.sleep(0.15 + (index % 5) * 0.05)
if step == "transform" and index == 17:
    print("transform: row 4812 has no customer id", file=sys.stderr, flush=True)
    with open(os.environ["ORK_ERROR"], "w") as err:
        err.write("ValueError: row 4812 has no customer id")
    sys.exit(3)
with open(os.environ["ORK_OUTPUT"], "w") as out:
    json.dump({"step": step, "index": index, "rows": 1000 + index}, out)
