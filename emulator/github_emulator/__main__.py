"""CLI: python -m github_emulator --preset demo --token t1=VALUE:collab=* ..."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading

from .config import ANSWER_KINDS, TOKEN_SYNTAX, EmulatorConfig, parse_token_list, parse_token_spec
from .data import PRESETS, build_dataset
from .server import EmulatorServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m github_emulator",
        description="Serve a synthetic GitHub REST + GraphQL API on a local port.",
        epilog=TOKEN_SYNTAX + "\nTokens from --token and EMULATOR_TOKENS are combined. Token values are "
        "never printed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--n-repos", type=int, help="override the preset's number of repositories")
    p.add_argument("--n-users", type=int, help="override the preset's approximate number of users")
    p.add_argument("--max-per-repo", type=int, help="override the preset's per-relation cap")
    p.add_argument("--window-seconds", type=float, default=3600.0, help="primary quota window")
    p.add_argument("--primary-status", type=int, choices=(403, 429), default=403)
    p.add_argument("--fault-502-rate", type=float, default=0.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--graphql-timeout-nodes", type=int)
    p.add_argument(
        "--answer-rate",
        action="append",
        default=[],
        metavar="KIND=P",
        help="give GitHub's answer KIND to that share of the requests it applies to; KIND is one of "
        + ", ".join(ANSWER_KINDS),
    )
    p.add_argument("--fault-seed", type=int, default=0, help="seed of the random faults and answers")
    p.add_argument(
        "--secondary-default-wait",
        type=float,
        default=60.0,
        help="seconds a client must wait after a secondary limit without a usable retry-after",
    )
    p.add_argument(
        "--graphql-cpu-seconds-per-minute",
        type=float,
        default=60.0,
        help="GraphQL CPU time an account may use per window (0 = unlimited)",
    )
    p.add_argument(
        "--punish-early", action="store_true", help="requests sent before their wait get a secondary limit"
    )
    p.add_argument("--token", action="append", default=[], metavar="SPEC", help="see token syntax below")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("n_repos", args.n_repos),
            ("n_users", args.n_users),
            ("max_per_repo", args.max_per_repo),
        )
        if v is not None
    }
    spec = dataclasses.replace(PRESETS[args.preset], **overrides)
    try:
        tokens = [parse_token_spec(t) for t in args.token]
        tokens += parse_token_list(os.environ.get("EMULATOR_TOKENS", ""))
        answer_rates = {}
        for item in args.answer_rate:
            kind, sep, rate = item.partition("=")
            if not sep:
                raise ValueError(f"--answer-rate takes KIND=P, got {item!r}")
            answer_rates[kind.strip()] = float(rate)
        config = EmulatorConfig(
            tokens=tokens,
            window_seconds=args.window_seconds,
            primary_limit_status=args.primary_status,
            fault_502_rate=args.fault_502_rate,
            latency_ms=args.latency_ms,
            graphql_timeout_nodes=args.graphql_timeout_nodes,
            answer_rates=answer_rates,
            fault_seed=args.fault_seed,
            secondary_default_wait=args.secondary_default_wait,
            graphql_cpu_seconds_per_minute=args.graphql_cpu_seconds_per_minute or None,
            punish_early=args.punish_early,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ds = build_dataset(spec)
    server = EmulatorServer(ds, config, host=args.host, port=args.port).start()
    print(f"emulator listening on {server.url}", flush=True)
    print(
        f"dataset: {len(ds.repo_names())} repos, ~{ds.n_persons} users; tokens: "
        f"{', '.join(t.name for t in tokens) or 'none (unauthenticated only)'}",
        file=sys.stderr,
        flush=True,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
