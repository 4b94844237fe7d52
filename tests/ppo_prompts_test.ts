import { strict as assert } from "node:assert";
import { join } from "node:path";
import { CHAT_TOKENS, PieceCounter, trainBpe } from "../tokenizer/mod.ts";
import { PromptCursor, readPrompts } from "../stages/ppo/prompts.ts";
import { ChatTemplate } from "../chat/template.ts";
import { DataError } from "../pipeline/errors.ts";

const counter = new PieceCounter();
counter.add("add two and three; name an animal");
const tokenizer = trainBpe(counter, { vocabSize: 280 });
const template = new ChatTemplate(tokenizer);

async function withFile(text: string, fn: (path: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "prompts.jsonl");
    await Deno.writeTextFile(path, text);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("prompts: {prompt} and {messages} rows render in the chat format; meta is kept", async () => {
  const rows = [
    { prompt: "add two and three", answer: 5 },
    { messages: [{ role: "system", content: "be brief" }, { role: "user", content: "name an animal" }] },
  ];
  await withFile(rows.map((r) => JSON.stringify(r)).join("\n") + "\n\n", async (path) => {
    const { prompts, skippedTooLong } = await readPrompts(path, template, { maxTokens: 100 });
    assert.equal(skippedTooLong, 0);
    assert.deepEqual(prompts.map((p) => [p.line, p.text, p.meta]), [
      [1, "add two and three", { answer: 5 }],
      [2, "name an animal", {}],
    ]);
    const id = (t: string) => tokenizer.specialId(t);
    assert.deepEqual(prompts[0].tokens, [
      id(CHAT_TOKENS.user),
      ...tokenizer.encode("add two and three"),
      id(CHAT_TOKENS.end),
      id(CHAT_TOKENS.assistant),
    ]);
    assert.deepEqual(prompts[1].tokens, [
      id(CHAT_TOKENS.system),
      ...tokenizer.encode("be brief"),
      id(CHAT_TOKENS.end),
      id(CHAT_TOKENS.user),
      ...tokenizer.encode("name an animal"),
      id(CHAT_TOKENS.end),
      id(CHAT_TOKENS.assistant),
    ]);
    // A template with other markers renders with them (PPO uses the SFT model's template).
    const plain = new ChatTemplate(tokenizer, { user: "Q: ", assistant: " A:", end: "<|endoftext|>" });
    const other = await readPrompts(path, plain, { maxTokens: 100 });
    assert.deepEqual(other.prompts[0].tokens, [
      ...tokenizer.encode("Q: "),
      ...tokenizer.encode("add two and three"),
      id("<|endoftext|>"),
      ...tokenizer.encode(" A:"),
    ]);
    // Too long for 3 tokens: both skipped, which is an error naming the limit.
    await assert.rejects(
      readPrompts(path, template, { maxTokens: 3 }),
      /all 2 prompts are longer than 3 tokens/,
    );
  });
});

Deno.test("prompts: malformed rows are errors naming the file, line and field", async () => {
  const cases: [string, RegExp][] = [
    ['{"prompt": "ok"}\n{"prompt": 3}', /prompts\.jsonl:line 2: prompt: must be a string/],
    ['{"prompt": "ok"}\nnot json', /prompts\.jsonl:line 2: not valid JSON/],
    ['{"text": "x"}', /line 1: needs a "prompt" string or a "messages" list/],
    ['{"prompt": "  "}', /line 1: the prompt is empty/],
    [
      '{"messages": [{"role": "bot", "content": "x"}]}',
      /line 1: messages\[0\]\.role: expected system, user or assistant/,
    ],
    [
      '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}',
      /the last turn must be the user's/,
    ],
    ["", /no prompts in the file/],
  ];
  for (const [text, pattern] of cases) {
    await withFile(text, async (path) => {
      await assert.rejects(readPrompts(path, template, { maxTokens: 100 }), (e: Error) => {
        assert.ok(e instanceof DataError, `${text}: ${e}`);
        assert.match(e.message, pattern);
        return true;
      });
    });
  }
  await assert.rejects(
    readPrompts("/nonexistent/p.jsonl", template, { maxTokens: 9 }),
    /prompt file not found/,
  );
});

Deno.test("prompt cursor: each epoch visits every prompt once, seeded; a saved cursor resumes exactly", () => {
  const cursor = new PromptCursor(5, 3);
  const first = cursor.take(5);
  assert.deepEqual([...first].sort(), [0, 1, 2, 3, 4]);
  const saved = cursor.state();
  const next = cursor.take(7);
  assert.deepEqual([...next.slice(0, 5)].sort(), [0, 1, 2, 3, 4]);
  assert.notDeepEqual(next.slice(0, 5), first); // a fresh order per epoch
  const resumed = new PromptCursor(5, 3);
  resumed.seek(saved);
  assert.deepEqual(resumed.take(7), next);
});
