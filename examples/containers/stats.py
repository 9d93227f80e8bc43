"""Counts the words it is given, in a Python image."""
import json
import os
import sys

words = json.load(open(os.environ["ORK_INPUT"]))["words"]
print(f"python {sys.version.split()[0]} got {len(words)} words")
json.dump({"sentence": " ".join(words), "count": len(words)}, open(os.environ["ORK_OUTPUT"], "w"))
