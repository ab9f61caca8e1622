"""python -m distill.review [--root .] [--port 8765]: serve the review page on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import cli, fail

DEFAULT_PORT = 8765


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distill.review", description=__doc__.split(":")[1].strip())
    p.add_argument("--root", type=Path, default=Path("."), help="project dir holding data/, reports/, models/")
    p.add_argument("--routes", type=Path, help="routes file (default <root>/data/routes.jsonl)")
    p.add_argument("--catalog", type=Path, help="skills catalog (default <root>/config/skills.yaml)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any)")
    p.add_argument("--min-examples", type=int, default=None, help="flag skills with fewer training records")
    return p


@cli
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not args.root.is_dir():
        fail(args.root, "not a directory", "--root")
    try:
        from werkzeug.serving import make_server
    except ImportError:
        fail("distill.review", "Flask is not installed: pip install -e '.[review]'")
    from .app import MIN_EXAMPLES, create_app

    app = create_app(args.root, routes=args.routes, catalog=args.catalog,
                     min_examples=args.min_examples if args.min_examples is not None else MIN_EXAMPLES)
    try:
        server = make_server("127.0.0.1", args.port, app, threaded=True)
    except OSError as err:
        fail(f"127.0.0.1:{args.port}", f"cannot listen: {err.strerror or err}", "--port")
    print(f"review page: http://127.0.0.1:{server.server_port}/  (data {args.root.resolve()}; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
