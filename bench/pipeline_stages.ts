/**
 * The stages of bench/pipeline_bench.ts, in a module of their own: a stage's process imports its
 * module, so that module must not do work at its top level (the bench creates temporary workdirs).
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { defineStage } from "../pipeline/stage.ts";

export const step = defineStage({
  name: "step",
  version: 1,
  module: import.meta.url,
  input: "blob",
  output: "blob",
  schema: z.object({ n: z.number() }),
  async run(ctx) {
    const previous = ctx.input ? Number(await ctx.input.readText("n.txt")) : 0;
    await ctx.out.writeText("n.txt", String(previous + ctx.config.n));
  },
});
export const source = defineStage({
  name: "source",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "blob",
  schema: z.object({}),
  async run(ctx) {
    await ctx.out.writeText("n.txt", "0");
  },
});

/** A stage whose output is made by hand in the bench; it must never run. */
export const big = defineStage({
  name: "big",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "blob",
  schema: z.object({}),
  run: () => Promise.reject(new Error("the 10 GB stage must not run")),
});
