import json
import os
import sys
import time

spec = json.load(open(os.environ["ORK_INPUT"]))
gate = os.path.join(spec["gate"], spec["task"])
n = 0
while not os.path.exists(gate):
    n += 1
    print(f"{spec['task']} waiting {n}", flush=True)
    time.sleep(0.1)
print(f"{spec['task']} passed the gate", flush=True)
with open(os.environ["ORK_OUTPUT"], "w") as out:
    json.dump({"task": spec["task"], "waited": n}, out)
