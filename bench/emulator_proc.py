"""Serve the bundled GitHub emulator from its own process, for the benchmarks.

    python bench/emulator_proc.py '{"spec": {...DatasetSpec fields...}, "tokens": [...], "config": {...}}'

The emulator runs apart from the code being measured, so the collector's wall time and
profile are not mixed with the emulator's (both are Python and would share one GIL).
It prints one JSON line (url, repository names, ground-truth sizes), then serves until
stdin closes or it is terminated. Control goes through the emulator's own HTTP routes
(/_emulator/stats, /_emulator/mutate).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from github_emulator import (
    DatasetSpec,
    EmulatorConfig,
    EmulatorServer,
    TokenConfig,
    build_dataset,
)


def main(argv: list[str]) -> int:
    opts = json.loads(argv[0])
    ds = build_dataset(DatasetSpec(**opts["spec"]))
    tokens = [TokenConfig(**t) for t in opts["tokens"]]
    server = EmulatorServer(ds, EmulatorConfig(tokens=tokens, **opts.get("config", {}))).start()
    info: dict = {"url": server.url, "repos": ds.repo_names(), "persons": ds.n_persons}
    if opts.get("truth"):
        # Ground-truth sizes for the first token: what a correct collector must end up with.
        truth = ds.truth(token_name=tokens[0].name)
        info["truth"] = {
            "users": len(truth["users"]),
            "pairs": len(truth["repo_users"]),
            "links": sum(len(v["relations"]) for v in truth["repo_users"].values()),
        }
    print(json.dumps(info), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
