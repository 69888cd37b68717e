"""Run `llmroute` from another source tree, for A/B runs of benchmarks/streams.py in one go.

    git archive BASE_COMMIT llmroute | tar -x -C /tmp/before
    python benchmarks/streams.py --llmroute-entry benchmarks/stream_entry.py \\
        --variant "before:STREAMS_TREE=/tmp/before"

With STREAMS_TREE set, its `llmroute` package is imported instead of the one on the path; without it, this is
`python -m llmroute.cli`.
"""

import os
import sys

if os.environ.get("STREAMS_TREE"):
    sys.path.insert(0, os.environ["STREAMS_TREE"])

from llmroute.cli import main

sys.argv[0] = "llmroute"
main()
