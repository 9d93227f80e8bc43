import json
import os
import sys
import time

spec = json.load(open(os.environ["ORK_INPUT"]))
gate = os.path.join(spec["gate"], spec["task"])
n = 0
deadline = time.monotonic() + 300
while not os.path.exists(gate):
    # A test that failed or finished removes its folder: do not outlive it.
    if not os.path.isdir(spec["gate"]) or time.monotonic() > deadline:
        sys.exit(f"{spec['task']}: gave up waiting for {gate}")
    n += 1
    print(f"{spec['task']} waiting {n}", flush=True)
    time.sleep(0.1)
print(f"{spec['task']} passed the gate", flush=True)
with open(os.environ["ORK_OUTPUT"], "w") as out:
    json.dump({"task": spec["task"], "waited": n}, out)
