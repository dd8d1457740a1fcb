// Calls tools through @modelcontextprotocol/sdk, the client most MCP hosts are built on, and
// prints what it got back: one JSON object per call. The test (tests/mcp_server/test_ts_client.py)
// decides what is right; this script only reports, including anything the SDK threw (for instance
// -32602 when a result's structuredContent does not match the tool's output schema).
//
// usage: node call_tools.mjs PLAN.json      PLAN = {"http": URL} or {"stdio": {command, args, env, cwd}},
//                                                  plus "calls": [{"tool": NAME, "args": {...}}, ...]
// An argument string "$N.a.b" is replaced by field a.b of call N's structuredContent.
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
const transport = plan.http
  ? new StreamableHTTPClientTransport(new URL(plan.http))
  : new StdioClientTransport({ ...plan.stdio, stderr: "inherit" });
const client = new Client({ name: "ts-sdk-check", version: "1.0.0" });
await client.connect(transport);
// callTool validates structured results against the output schemas it learnt from tools/list.
const listed = await client.listTools();
const results = [];

function resolve(value) {
  if (typeof value === "string") {
    const ref = /^\$(\d+)\.(.+)$/.exec(value);
    if (ref) {
      return ref[2].split(".").reduce((obj, key) => obj?.[key], results[Number(ref[1])].structuredContent);
    }
    return value;
  }
  if (Array.isArray(value)) return value.map(resolve);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolve(v)]));
  }
  return value;
}

for (const call of plan.calls) {
  const out = { tool: call.tool };
  try {
    const result = await client.callTool({ name: call.tool, arguments: resolve(call.args) }, undefined,
      { timeout: 120000 });
    out.isError = result.isError === true;
    out.structuredContent = result.structuredContent ?? null;
    out.text = (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
  } catch (err) {
    out.thrown = `${err?.code ?? ""} ${err?.message ?? err}`.trim();
  }
  results.push(out);
}
console.log(JSON.stringify({ tools: listed.tools.map((t) => t.name), results }));
await client.close();
