/**
 * The body of a pool worker thread: runs one shard function per message and replies with its
 * result or its error. See {@linkcode runShards}.
 * @module
 */
/// <reference lib="deno.worker" />
import { loadShardFn, type ShardReply, type ShardRequest } from "./pool.ts";
import { OutputWriter } from "./workspace.ts";

self.onmessage = async (event: MessageEvent<ShardRequest>) => {
  const req = event.data;
  let reply: ShardReply;
  try {
    const fn = await loadShardFn(req);
    const out = new OutputWriter(req.outDir, req.tmpDir);
    const result = await fn(req.args, { id: req.id, out });
    reply = { ok: true, result, files: out.written };
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    reply = { ok: false, error: { name: err.name, message: err.message, stack: err.stack } };
  }
  self.postMessage(reply);
};
