"""Type-check each dashboard JSON against @grafana/schema's Dashboard type with `tsc --strict`.

The JSON is written into a .ts file as the initializer of a `Dashboard`-typed constant, so
its literals are checked against the schema's unions (importing the .json would widen them).

    python grafana/typecheck/check.py     # after `npm ci` (or `npm install`) in grafana/typecheck
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE.parent / "dashboards"


def main() -> int:
    tsc = HERE / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        print(f"{tsc} is missing: run `npm install` in {HERE}", file=sys.stderr)
        return 2
    # The generated .ts files and their tsconfig live in a temporary directory, never in the checkout;
    # the config extends ours and resolves @grafana/schema from our node_modules.
    with tempfile.TemporaryDirectory(prefix="dashboard-typecheck-") as tmp:
        build = Path(tmp)
        for path in sorted(DASHBOARDS.glob("*.json")):
            (build / f"{path.stem}.ts").write_text(
                'import type { Dashboard } from "@grafana/schema";\n\n'
                f"export const dashboard: Dashboard = {path.read_text()};\n")
        (build / "tsconfig.json").write_text(json.dumps({
            "extends": str(HERE / "tsconfig.json"), "include": [str(build / "*.ts")],
            "compilerOptions": {"typeRoots": [str(HERE / "node_modules" / "@types")],
                                "baseUrl": str(HERE), "paths": {"*": [str(HERE / "node_modules" / "*")]}}}))
        result = subprocess.run([str(tsc), "-p", str(build)], cwd=build)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
