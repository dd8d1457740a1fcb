"""Type-check each dashboard JSON against @grafana/schema's Dashboard type with `tsc --strict`.

The JSON is written into a .ts file as the initializer of a `Dashboard`-typed constant, so
its literals are checked against the schema's unions (importing the .json would widen them).

    python grafana/typecheck/check.py     # after `npm ci` (or `npm install`) in grafana/typecheck
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE.parent / "dashboards"


def main() -> int:
    build = HERE / "build"
    build.mkdir(exist_ok=True)
    for old in build.glob("*.ts"):
        old.unlink()
    for path in sorted(DASHBOARDS.glob("*.json")):
        (build / f"{path.stem}.ts").write_text(
            'import type { Dashboard } from "@grafana/schema";\n\n'
            f"export const dashboard: Dashboard = {path.read_text()};\n")
    tsc = HERE / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        print(f"{tsc} is missing: run `npm install` in {HERE}", file=sys.stderr)
        return 2
    result = subprocess.run([str(tsc), "-p", str(HERE)], cwd=HERE)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
