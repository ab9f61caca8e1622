"""`distill-route`: route one text (`distill-route "turn your eyes red"`), or run the router service
(`distill-route serve --config ...`, see distill.runtime.service).

To route the literal word "serve", write `distill-route -- serve`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        from .service import main as serve

        return serve(argv[1:])
    from .router import main as route

    return route(argv)


if __name__ == "__main__":
    sys.exit(main())
