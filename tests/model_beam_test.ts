// Beam search against Hugging Face's algorithm: `hfBeamSearch` below follows transformers'
// BeamSearchScorer.process / BeamHypotheses / finalize step by step (batch of one), over any
// next-token oracle; kiln's BeamSearch (driven the same way) and beamSearch (a GPT with its KV cache)
// must give the same hypothesis and score.
import { strict as assert } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { GPT } from "../model/gpt.ts";
import { type BeamOptions, BeamSearch, beamSearch } from "../model/beam.ts";
import { generate, generateBatch } from "../model/generate.ts";

/** Next-token log-probabilities after the generated tokens `seq` (the prompt is the oracle's own). */
type Oracle = (seq: number[]) => number[];

interface Answer {
  ids: number[];
  score: number;
  finish: "stop" | "length";
}

/** Hugging Face's beam search for one prompt (transformers' BeamSearchScorer), written out plainly. */
function hfBeamSearch(next: Oracle, V: number, o: BeamOptions): Answer {
  const K = o.beams, eos = o.stop ?? [], lengthPenalty = o.lengthPenalty ?? 1;
  const earlyStopping = o.earlyStopping ?? false;
  // BeamHypotheses: (score, tokens, finish), worst_score starting at 1e9.
  const beams: Answer[] = [];
  let worstScore = 1e9;
  const add = (ids: number[], sumLogprobs: number, generatedLen: number, finish: Answer["finish"]) => {
    const score = sumLogprobs / generatedLen ** lengthPenalty;
    if (beams.length < K || score > worstScore) {
      beams.push({ ids, score, finish });
      if (beams.length > K) {
        const sorted = beams.map((b, idx) => [b.score, idx]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        beams.splice(sorted[0][1], 1);
        worstScore = sorted[1][0];
      } else {
        worstScore = Math.min(score, worstScore);
      }
    }
  };
  const isDone = (bestSumLogprobs: number, generatedLen: number) => {
    if (beams.length < K) return false;
    if (earlyStopping === true) return true;
    if (earlyStopping === false) return worstScore >= bestSumLogprobs / generatedLen ** lengthPenalty;
    const len = lengthPenalty > 0 ? o.maxTokens : generatedLen;
    return worstScore >= bestSumLogprobs / len ** lengthPenalty;
  };
  let inputIds: number[][] = Array.from({ length: K }, () => []);
  let beamScores: number[] = Array.from({ length: K }, (_, b) => (b === 0 ? 0 : -1e9));
  let done = false;
  for (let curLen = 0; curLen < o.maxTokens && !done; curLen++) {
    // next_token_scores = log_softmax + beam_scores, flattened over (beam, token), top 2K (or more with several eos).
    const flat: { score: number; index: number }[] = [];
    for (let b = 0; b < K; b++) {
      const lp = next(inputIds[b]);
      for (let v = 0; v < V; v++) flat.push({ score: beamScores[b] + lp[v], index: b * V + v });
    }
    flat.sort((a, c) => c.score - a.score || a.index - c.index);
    const top = flat.slice(0, Math.max(2, 1 + eos.length) * K);
    const nextScores: number[] = [], nextTokens: number[] = [], nextIndices: number[] = [];
    for (let rank = 0; rank < top.length; rank++) {
      const token = top[rank].index % V, beam = Math.floor(top[rank].index / V);
      if (eos.includes(token)) {
        if (rank >= K) continue; // is_beam_token_worse_than_top_num_beams
        add([...inputIds[beam], token], top[rank].score, curLen + 1, "stop");
      } else {
        nextScores.push(top[rank].score);
        nextTokens.push(token);
        nextIndices.push(beam);
      }
      if (nextScores.length === K) break;
    }
    done = isDone(top[0].score, curLen + 1);
    inputIds = nextIndices.map((b, i) => [...inputIds[b], nextTokens[i]]);
    beamScores = nextScores;
  }
  // finalize: only a search that is not done lets its open beams in.
  if (!done) inputIds.forEach((ids, b) => add(ids, beamScores[b], ids.length, "length"));
  const sorted = beams.map((b, i) => ({ b, i })).sort((x, y) => x.b.score - y.b.score || x.i - y.i);
  return sorted.pop()!.b;
}

/** kiln's BeamSearch driven by an oracle (what beamSearch does with a model). */
function kilnBeamSearch(next: Oracle, V: number, o: BeamOptions): Answer & { search: BeamSearch } {
  const search = new BeamSearch(o, V);
  while (!search.done && search.step < o.maxTokens) {
    const rows = search.beams.flatMap((h) => next(h.ids));
    search.advance(Float64Array.from(rows));
    assert.equal(search.beams.length, o.beams, "K beams always continue");
  }
  const { ids, score, finish } = search.best();
  return { ids, score, finish, search };
}

const logs = (probs: number[]) => probs.map(Math.log);

/** A Markov oracle over 4 tokens (0 is the stop token) made to show the cases of issue 19. */
const markov: Oracle = (seq) => {
  const last = seq.at(-1);
  if (last === undefined) return logs([0.5, 0.3, 0.15, 0.05]);
  if (last === 1) return logs([0.01, 0.02, 0.02, 0.95]);
  if (last === 2) return logs([0.9, 0.04, 0.03, 0.03]);
  if (last === 3) return logs([0.99, 0.004, 0.003, 0.003]);
  return logs([0.25, 0.25, 0.25, 0.25]);
};

Deno.test("BeamSearch: early_stopping=false (HF's default) searches on after K finished; true stops at once", () => {
  const base = { beams: 2, maxTokens: 6, stop: [0] };
  // Step 1 finishes [0] (−0.69); step 2 finishes [2, 0] (−1.0): two hypotheses, K = 2.
  const eager = kilnBeamSearch(markov, 4, { ...base, earlyStopping: true });
  assert.deepEqual(eager.ids, [0]);
  assert.equal(eager.finish, "stop");
  // Done: the live beam [1, 3] (normalised −0.63, better than −0.69) does not compete (issue case 4).
  assert.equal(eager.search.done, true);
  assert.equal(eager.search.step, 2);
  assert.deepEqual(eager, {
    ...hfBeamSearch(markov, 4, { ...base, earlyStopping: true }),
    search: eager.search,
  });
  // HF's default keeps going: [1, 3, 0] scores (ln .3 + ln .95 + ln .99) / 3 = −0.42.
  for (const earlyStopping of [false, "never"] as const) {
    const patient = kilnBeamSearch(markov, 4, { ...base, earlyStopping });
    assert.deepEqual(patient.ids, [1, 3, 0]);
    assert.ok(Math.abs(patient.score - (Math.log(0.3) + Math.log(0.95) + Math.log(0.99)) / 3) < 1e-12);
    const reference = hfBeamSearch(markov, 4, { ...base, earlyStopping });
    assert.deepEqual(patient.ids, reference.ids);
    assert.ok(Math.abs(patient.score - reference.score) < 1e-12);
  }
});

Deno.test("BeamSearch: a stop token ranked below the top K does not finish a hypothesis", () => {
  // From the prompt: 1 (.6), 2 (.3), then the stop token (.07): third of the top 2K with K = 2.
  const oracle: Oracle = (seq) => (seq.length === 0 ? logs([0.07, 0.6, 0.3, 0.03]) : markov(seq));
  const search = new BeamSearch({ beams: 2, maxTokens: 3, stop: [0] }, 4);
  const order = search.advance(Float64Array.from([...oracle([]), ...oracle([])]));
  assert.deepEqual(search.finished, [], "[0] ranked 3rd of 2K: skipped, as HF does");
  assert.deepEqual(search.beams.map((h) => h.ids), [[1], [2]]);
  assert.deepEqual(order, [0, 0]);
});

Deno.test("BeamSearch: when the stop token tops every beam, K beams still continue (top 2K over all beams)", () => {
  const stopFirst: Oracle = () => logs([0.7, 0.1, 0.1, 0.1]);
  const search = new BeamSearch({ beams: 3, maxTokens: 4, stop: [0] }, 4);
  search.advance(Float64Array.from(Array.from({ length: 3 }, () => stopFirst([])).flat()));
  assert.equal(search.beams.length, 3);
  assert.deepEqual(search.beams.map((h) => h.ids), [[1], [2], [3]]);
  assert.deepEqual(search.finished.map((h) => h.ids), [[0]]);
  const answer = kilnBeamSearch(stopFirst, 4, { beams: 3, maxTokens: 4, stop: [0] });
  assert.deepEqual(
    { ids: answer.ids, score: answer.score, finish: answer.finish },
    hfBeamSearch(stopFirst, 4, {
      beams: 3,
      maxTokens: 4,
      stop: [0],
    }),
  );
});

/** mulberry32: a seeded generator for the random oracles. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("BeamSearch: equals HF's algorithm on 400 random oracles, stop sets, penalties and stopping rules", () => {
  const outcomes = new Set<string>();
  for (let c = 0; c < 400; c++) {
    const rand = random(c + 1);
    const V = 5 + Math.floor(rand() * 6);
    const beams = 1 + Math.floor(rand() * 4);
    const stop = rand() < 0.15 ? [] : rand() < 0.7 ? [0] : [0, 1];
    const lengthPenalty = [1, 0, 2, -0.5, 0.7][Math.floor(rand() * 5)];
    const earlyStopping = ([true, false, "never"] as const)[Math.floor(rand() * 3)];
    const maxTokens = 1 + Math.floor(rand() * 8);
    // Log-probs depend on the last token and the length (peaked, so stops and ranks vary).
    const table = Array.from({ length: (V + 1) * 3 }, () => {
      const logits = Array.from({ length: V }, () => rand() * 6);
      const z = Math.log(logits.reduce((s, x) => s + Math.exp(x), 0));
      return logits.map((x) => x - z);
    });
    const oracle: Oracle = (seq) => table[(seq.at(-1) ?? V) * 3 + seq.length % 3];
    const options = { beams, maxTokens, stop, lengthPenalty, earlyStopping };
    const kiln = kilnBeamSearch(oracle, V, options);
    const hf = hfBeamSearch(oracle, V, options);
    const what = JSON.stringify({ c, ...options });
    assert.deepEqual(kiln.ids, hf.ids, what);
    assert.equal(kiln.finish, hf.finish, what);
    assert.ok(Math.abs(kiln.score - hf.score) < 1e-9, what);
    if (kiln.finish === "length") {
      assert.equal(kiln.ids.length, maxTokens, `${what}: "length" means maxTokens`);
    }
    outcomes.add(`${kiln.finish} ${kiln.search.done ? "done" : "ran out"}`);
  }
  assert.deepEqual([...outcomes].sort(), ["length ran out", "stop done", "stop ran out"]);
});

// A tiny GPT (as model_generate_test.ts), decoded with its KV cache, against the reference over full forwards.
const config = gptConfig({ layers: 2, dim: 16, heads: 2, context: 16, vocab: 11 });
const layout = paramLayout(config);
const model = new GPT(createCpuBackend(), layout, initParams(layout, 5).map((x) => x * 6));

/** The oracle of `prompt` under the model: log-softmax of a full forward (no cache), memoised. */
function modelOracle(prompt: number[]): { next: Oracle; fill: () => Promise<void> } {
  const memo = new Map<string, number[]>();
  const wanted = new Set<string>();
  return {
    next: (seq) => {
      const key = seq.join(",");
      const row = memo.get(key);
      if (!row) {
        wanted.add(key);
        throw new NeedForward();
      }
      return row;
    },
    // The forwards are async; the reference is not: compute what it asked for, then rerun it.
    fill: async () => {
      for (const key of wanted) {
        const tokens = [...prompt, ...(key ? key.split(",").map(Number) : [])];
        const acts = model.activations(1, tokens.length);
        model.forward(acts, Int32Array.from(tokens));
        const [logits] = await model.backend.download(acts.logits);
        model.freeActivations(acts);
        const row = [...logits.subarray((tokens.length - 1) * 11, tokens.length * 11)];
        const max = Math.max(...row);
        const logZ = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
        memo.set(key, row.map((x) => x - logZ));
      }
      wanted.clear();
    },
  };
}

class NeedForward extends Error {}

async function reference(prompt: number[], options: BeamOptions): Promise<Answer> {
  const oracle = modelOracle(prompt);
  for (;;) {
    try {
      return hfBeamSearch(oracle.next, 11, options);
    } catch (e) {
      if (!(e instanceof NeedForward)) throw e;
      await oracle.fill();
    }
  }
}

Deno.test("beamSearch: a GPT with its KV cache gives HF's hypothesis and score, with and without stop tokens", async () => {
  const prompts = [[1, 5], [3, 0, 9, 2, 7]];
  const outcomes = new Set<string>();
  for (const prompt of prompts) {
    const greedy = await generate(model, prompt, { maxTokens: 3, temperature: 0 });
    const stops = [[], [greedy.ids[0]], [greedy.ids[1], greedy.ids[2]]];
    for (const stop of stops) {
      for (const earlyStopping of [true, false, "never"] as const) {
        for (const lengthPenalty of [1, 2]) {
          const options = { beams: 3, maxTokens: 8, stop, earlyStopping, lengthPenalty };
          const got = await beamSearch(model, prompt, options);
          const want = await reference(prompt, options);
          const what = JSON.stringify({ prompt, ...options });
          assert.deepEqual(got.ids, want.ids, what);
          assert.equal(got.finish, want.finish, what);
          assert.ok(Math.abs(got.score! - want.score) < 1e-4, what);
          const sum = got.logprobs.reduce((s, x) => s + x, 0);
          assert.ok(Math.abs(got.score! - sum / got.ids.length ** lengthPenalty) < 1e-9, what);
          outcomes.add(got.finish);
        }
      }
    }
  }
  assert.deepEqual([...outcomes].sort(), ["length", "stop"]);
  // generate/generateBatch hand beams > 1 to beamSearch.
  const options = { beams: 3, maxTokens: 8, stop: [4] };
  assert.deepEqual(await generate(model, prompts[0], options), await beamSearch(model, prompts[0], options));
  assert.deepEqual(await generateBatch(model, prompts, options), [
    await beamSearch(model, prompts[0], options),
    await beamSearch(model, prompts[1], options),
  ]);
  await assert.rejects(
    () => generate(model, [1], { maxTokens: 4, beams: 2, earlyStopping: "sometimes" as unknown as boolean }),
    /earlyStopping must be true, false or "never"/,
  );
});
