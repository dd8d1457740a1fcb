#!/usr/bin/env bash
# Upload the dashboard through Grafana's HTTP API (POST /api/dashboards/db, overwriting).
#   GRAFANA_URL        default http://localhost:3000
#   GRAFANA_TOKEN      a service-account token, or
#   GRAFANA_USER / GRAFANA_PASSWORD   basic auth (default admin/admin, as on a new Grafana)
#   GRAFANA_FOLDER_UID optional folder to put it in
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
url="${GRAFANA_URL:-http://localhost:3000}"
dashboard="${1:-$here/dashboards/mahavishnu-pools.json}"
body="$(python3 - "$dashboard" <<'PY'
import json, os, sys
dash = json.load(open(sys.argv[1]))
dash.pop("id", None)
payload = {"dashboard": dash, "overwrite": True, "message": "deployed by deploy_dashboard.sh"}
if os.environ.get("GRAFANA_FOLDER_UID"):
    payload["folderUid"] = os.environ["GRAFANA_FOLDER_UID"]
print(json.dumps(payload))
PY
)"
if [ -n "${GRAFANA_TOKEN:-}" ]; then
  auth=(-H "Authorization: Bearer ${GRAFANA_TOKEN}")
else
  auth=(-u "${GRAFANA_USER:-admin}:${GRAFANA_PASSWORD:-admin}")
fi
response="$(curl -sS --fail-with-body -X POST "${url%/}/api/dashboards/db" \
  -H "Content-Type: application/json" "${auth[@]}" --data-binary "$body")" || {
  echo "deploy failed: $response" >&2
  exit 1
}
echo "deployed: $response"
echo "open ${url%/}/d/pool-monitoring"
