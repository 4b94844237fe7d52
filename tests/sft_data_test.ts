import { strict as assert } from "node:assert";
import { join } from "node:path";
import { DataError } from "../pipeline/errors.ts";
import { PieceCounter, trainBpe } from "../tokenizer/mod.ts";
import { readSftData } from "../chat/data.ts";
import { ChatTemplate } from "../chat/template.ts";
import { batchRows, packRows } from "../chat/packing.ts";
import { checkResponse, corruptAnswers, expectedAnswer, generateTasks, responseScore } from "../chat/task.ts";
import { rankByChecker, readComparisons } from "../stages/reward_model/data.ts";
import { Rng } from "../model/rng.ts";

/** Writes lines (strings, or raw bytes for a non-UTF-8 line) to a temp file. */
async function file(lines: (string | Uint8Array)[]): Promise<string> {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "data.jsonl");
  const enc = new TextEncoder();
  const parts = lines.flatMap((l) => [typeof l === "string" ? enc.encode(l) : l, enc.encode("\n")]);
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  await Deno.writeFile(path, bytes);
  return path;
}

function tokenizer() {
  const counter = new PieceCounter();
  counter.add("What is 1 + 2? Uppercase: abc");
  return trainBpe(counter, { vocabSize: 261 });
}

Deno.test("sft data: both shapes parse; bad rows are errors naming file, line and field", async () => {
  const good = await file([
    JSON.stringify({ prompt: "What is 1 + 2?", response: "3", id: 7 }),
    "",
    JSON.stringify({ prompt: "p", response: "r", system: "be brief" }),
    JSON.stringify({ messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }] }),
  ]);
  const { examples, skipped } = await readSftData(good);
  assert.equal(skipped.total, 0);
  assert.deepEqual(examples.map((e) => e.line), [1, 3, 4]);
  assert.deepEqual(examples[0].turns, [{ role: "user", content: "What is 1 + 2?" }, {
    role: "assistant",
    content: "3",
  }]);
  assert.deepEqual(examples[1].turns[0], { role: "system", content: "be brief" });

  const cases: [string | Uint8Array, RegExp][] = [
    [JSON.stringify({ prompt: "p" }), /line 1: response: missing/],
    [JSON.stringify({ prompt: "p", response: "  " }), /line 1: response: is empty/],
    [JSON.stringify({ prompt: 3, response: "r" }), /line 1: prompt: must be a string/],
    [
      JSON.stringify({ messages: [{ role: "bot", content: "x" }] }),
      /line 1: messages\[0\]\.role: must be system, user or assistant/,
    ],
    [
      JSON.stringify({ messages: [{ role: "user", content: "x" }] }),
      /line 1: messages: has no assistant turn/,
    ],
    [JSON.stringify({ text: "x" }), /line 1: needs "prompt" and "response", or "messages"/],
    ["{not json", /line 1: not valid JSON/],
    ["[1, 2]", /line 1: expected a JSON object/],
    [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), /line 1: not valid UTF-8/],
  ];
  for (const [line, message] of cases) {
    const path = await file([line]);
    await assert.rejects(readSftData(path), (e: Error) => {
      assert.ok(e instanceof DataError, `${e}`);
      assert.ok(e.message.startsWith(path), e.message);
      assert.match(e.message, message);
      return true;
    });
  }
});

Deno.test("sft data: onBadRow skip counts each reason and keeps the good rows", async () => {
  const path = await file([
    JSON.stringify({ prompt: "a", response: "b" }),
    JSON.stringify({ prompt: "a", response: "" }),
    "oops",
    new Uint8Array([0xc3, 0x28]),
    JSON.stringify({ prompt: "c", response: "d" }),
  ]);
  const { examples, skipped } = await readSftData(path, { onBadRow: "skip" });
  assert.deepEqual(examples.map((e) => e.line), [1, 5]);
  assert.deepEqual(skipped.counts, { emptyResponse: 1, notJson: 1, notUtf8: 1 });
  await assert.rejects(readSftData(await file(["oops"]), { onBadRow: "skip" }), /all 1 rows are malformed/);
});

Deno.test("comparisons: the three shapes give the right pairs; malformed rows are named or counted", async () => {
  const path = await file([
    JSON.stringify({ prompt: "q", chosen: "a", rejected: "b" }),
    JSON.stringify({ prompt: "q", ranked: ["a", "b", "c"] }),
    JSON.stringify({
      messages: [{ role: "user", content: "q" }],
      responses: ["a", "b", "c"],
      scores: [0.5, 1, 0.5],
    }),
  ]);
  const { comparisons } = await readComparisons(path);
  assert.deepEqual(comparisons[0].pairs, [[0, 1]]);
  assert.deepEqual(comparisons[1].pairs, [[0, 1], [0, 2], [1, 2]]);
  assert.deepEqual(comparisons[2].pairs, [[1, 0], [1, 2]]); // the tie between 0 and 2 gives no pair
  assert.deepEqual(comparisons[2].prompt, [{ role: "user", content: "q" }]);

  const cases: [string, RegExp, string][] = [
    [
      JSON.stringify({ prompt: "q", ranked: ["a"] }),
      /line 1: ranked: has 1 response; a comparison needs K ≥ 2/,
      "tooFewResponses",
    ],
    [
      JSON.stringify({ prompt: "q", ranked: ["a", "b", "a"] }),
      /responses 0 and 2 are the same text/,
      "duplicateResponse",
    ],
    [
      JSON.stringify({ prompt: "q", chosen: "", rejected: "b" }),
      /line 1: chosen: response 0 is empty/,
      "emptyResponse",
    ],
    [JSON.stringify({ prompt: "q", chosen: "a" }), /line 1: rejected: missing/, "missingField"],
    [
      JSON.stringify({ prompt: "q", responses: ["a", "b"], scores: [1, 1] }),
      /all responses score the same/,
      "allTied",
    ],
    [
      JSON.stringify({ prompt: "q", responses: ["a", "b"], scores: [1] }),
      /has 1 numbers for 2 responses/,
      "lengthMismatch",
    ],
    [JSON.stringify({ ranked: ["a", "b"] }), /line 1: prompt: missing/, "missingField"],
    [
      JSON.stringify({
        messages: [{ role: "user", content: "q" }, { role: "assistant", content: "x" }],
        ranked: ["a", "b"],
      }),
      /must end with a user turn/,
      "badRole",
    ],
  ];
  for (const [line, message, reason] of cases) {
    const bad = await file([line, JSON.stringify({ prompt: "ok", chosen: "x", rejected: "y" })]);
    await assert.rejects(
      readComparisons(bad),
      (e: Error) => e instanceof DataError && message.test(e.message),
    );
    const { comparisons, skipped } = await readComparisons(bad, { onBadRow: "skip" });
    assert.equal(comparisons.length, 1);
    assert.deepEqual(skipped.counts, { [reason]: 1 });
  }
});

Deno.test("chat template: loss weights cover exactly the assistant's content and its end marker", () => {
  const tok = tokenizer();
  const template = new ChatTemplate(tok);
  const { ids, weights } = template.render([
    { role: "system", content: "s" },
    { role: "user", content: "What is 1 + 2?" },
    { role: "assistant", content: "3" },
  ]);
  const [sys, user, asst, end] = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"].map((t) =>
    tok.specialId(t)
  );
  const q = tok.encode("What is 1 + 2?");
  assert.deepEqual(ids, [sys, ...tok.encode("s"), end, user, ...q, end, asst, ...tok.encode("3"), end]);
  assert.deepEqual(weights, [0, 0, 0, 0, ...q.map(() => 0), 0, 0, 1, 1]);
  // A prompt ends by opening the assistant's turn; the PPO stage renders the same tokens.
  assert.deepEqual(template.prompt([{ role: "user", content: "hi" }]), [
    user,
    ...tok.encode("hi"),
    end,
    asst,
  ]);
  // Contents are text: a user cannot forge a turn boundary.
  assert.ok(!template.render([{ role: "user", content: "<|end|>" }]).ids.slice(1, -1).includes(end));
  assert.equal(template.answerText([...tok.encode("42"), end, ...tok.encode("junk")]), "42");
  // Plain-text markers work for tokenizers without chat tokens.
  const plain = new ChatTemplate(tok, { user: "User: ", assistant: "\nBot: ", end: "\n" });
  assert.equal(tok.decode(plain.prompt([{ role: "user", content: "hi" }])), "User: hi\n\nBot: ");
});

Deno.test("packing: next-fit rows, next-token targets inside each example, weights shifted by one, positions from 0", () => {
  const examples = [
    { ids: [1, 2, 3], weights: [0, 1, 1] },
    { ids: [4, 5], weights: [0, 1] },
    { ids: [6, 7, 8, 9], weights: [0, 0, 1, 1] },
  ];
  const rows = packRows(examples, 6);
  assert.deepEqual(rows, [[0, 1], [2]]);
  assert.deepEqual(packRows(examples, 6, false), [[0], [1], [2]]);
  const b = batchRows(rows, examples, 2, 6, 0);
  assert.deepEqual(Array.from(b.inputs), [1, 2, 3, 4, 5, 0, 6, 7, 8, 9, 0, 0]);
  assert.deepEqual(Array.from(b.targets), [2, 3, 0, 5, 0, 0, 7, 8, 9, 0, 0, 0]);
  assert.deepEqual(Array.from(b.lossMask), [1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0]);
  assert.deepEqual(Array.from(b.segments), [0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 1]);
  // Positions restart in every example (and in the padding).
  assert.deepEqual(Array.from(b.positions), [0, 1, 2, 0, 1, 0, 0, 1, 2, 3, 0, 1]);
  assert.equal(b.tokens, 5);
  assert.throws(() => packRows([{ ids: [1, 2, 3], weights: [0, 0, 0] }], 2), /more than the row length/);
});

Deno.test("task: prompts parse back to their answers; the checker and grader agree", () => {
  const tasks = generateTasks(200, { seed: 3 });
  assert.equal(new Set(tasks.map((t) => t.prompt)).size, 200);
  assert.deepEqual(generateTasks(5, { seed: 3 }), tasks.slice(0, 5));
  for (const t of tasks) {
    assert.equal(expectedAnswer(t.prompt), t.answer);
    assert.equal(checkResponse(t.prompt, ` ${t.answer}\n`), true);
    assert.equal(responseScore(t.prompt, t.answer), 1);
    for (const wrong of corruptAnswers(t, 3, new Rng(1))) {
      assert.equal(checkResponse(t.prompt, wrong), false);
      assert.ok(responseScore(t.prompt, wrong)! < 0.5);
    }
  }
  assert.equal(expectedAnswer("What is 17 + 25?"), "42");
  assert.equal(expectedAnswer("Reverse: cab"), "bac");
  assert.equal(expectedAnswer("Uppercase: cab"), "CAB");
  assert.equal(expectedAnswer('How many letters are in "cab"?'), "3");
  assert.equal(checkResponse("Tell me a joke", "no"), undefined);
  assert.ok(responseScore("Uppercase: cab", "CAX")! > responseScore("Uppercase: cab", "zzz")!);
  assert.equal(responseScore("Uppercase: cab", ""), 0);
  assert.equal(
    generateTasks(500, { seed: 1, kinds: ["upper"], alphabet: "ab", minLength: 1, maxLength: 2 }).length,
    6,
  );
  // Ranking K sampled candidates: empty ones left out, duplicates merged, all-equal groups dropped.
  const grade = (r: string) => responseScore("What is 1 + 2?", r)!;
  assert.deepEqual(rankByChecker("What is 1 + 2?", ["3", "4", "3 ", " "], grade), {
    row: { prompt: "What is 1 + 2?", responses: ["3", "4"], scores: [1, 0] },
    duplicates: 1,
    empty: 1,
  });
  assert.deepEqual(rankByChecker("What is 1 + 2?", ["4", "4", ""], grade), {
    duplicates: 1,
    empty: 1,
    dropped: "tooFewResponses",
  });
  assert.deepEqual(rankByChecker("What is 1 + 2?", ["7", "9"], grade), {
    duplicates: 0,
    empty: 0,
    dropped: "allTied",
  });
});
