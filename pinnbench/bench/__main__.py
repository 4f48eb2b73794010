"""``python -m pinnbench.bench NAME [args]``: dispatch to ``pinnbench.bench.NAME.main(args)``."""

import importlib
import sys

BENCHES = ("estimators", "ops", "roofline", "solvers")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: python -m pinnbench.bench {{{','.join(BENCHES)}}} [options]", file=sys.stderr)
        return 2
    return importlib.import_module(f"pinnbench.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
