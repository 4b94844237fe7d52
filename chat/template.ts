/**
 * kiln's chat template: how a conversation becomes tokens, and which of those tokens the SFT loss
 * (and the reward model's score) covers.
 *
 * Each turn is `<role marker> content <end marker>`; a prompt for generation ends with the assistant
 * marker, and the model's answer ends with the end marker. With the default markers (the tokenizer's
 * special tokens, see `tokenizer/tokenizer.ts`'s `CHAT_TOKENS`):
 *
 * ```text
 * <|system|>Answer tersely.<|end|><|user|>What is 17 + 25?<|end|><|assistant|>42<|end|>
 *                                                                  ^^^^^^^^^^^^^ loss here only
 * ```
 *
 * Markers are strings: one that is a special token of the tokenizer becomes that single id, any other
 * text is encoded as text. The `sft` stage adds the chat tokens the markers use to a tokenizer that
 * lacks them (GPT-2's), growing the model's embedding (`sft/vocab.ts`); to keep a vocabulary as it is,
 * set all four markers to text, e.g. `{ system: "System: ", user: "User: ", assistant: "\nAssistant: ",
 * end: "\n" }`. Message contents are always encoded as plain text: a user typing `<|end|>` cannot forge
 * a turn boundary.
 *
 * The `sft` stage writes the template it trained with into its artifact (`chat_template.json`), and
 * the reward model and PPO render prompts with the same one ({@linkcode loadChatTemplate}).
 *
 * @example
 * ```ts ignore
 * const template = new ChatTemplate(tokenizer);
 * const { ids, weights } = template.render([{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }]);
 * const prompt = template.prompt([{ role: "user", content: "Hi" }]); // ends with <|assistant|>
 * ```
 * @module
 */
import { CHAT_TOKENS, END_OF_TEXT, type Tokenizer } from "../tokenizer/mod.ts";
import { DataError } from "../pipeline/errors.ts";
import type { Role, Turn } from "./data.ts";

/** The marker strings of a template. */
export interface ChatMarkers {
  system: string;
  user: string;
  assistant: string;
  /** Closes every turn; the model emits it to end its answer. */
  end: string;
}

/** kiln's default markers: the tokenizer's chat special tokens. */
export const DEFAULT_MARKERS: ChatMarkers = {
  system: CHAT_TOKENS.system,
  user: CHAT_TOKENS.user,
  assistant: CHAT_TOKENS.assistant,
  end: CHAT_TOKENS.end,
};

/** The file a model artifact keeps its template in. */
export const CHAT_TEMPLATE_FILE = "chat_template.json";

/** A rendered conversation: token ids and, per token, whether the loss covers predicting it. */
export interface Rendered {
  ids: number[];
  /** 1 on assistant content and the end marker closing it, 0 elsewhere. */
  weights: number[];
}

/** Renders conversations with a tokenizer and markers; see the module doc. */
export class ChatTemplate {
  readonly markers: ChatMarkers;
  readonly #ids: Record<keyof ChatMarkers, number[]>;

  constructor(readonly tokenizer: Tokenizer, markers: Partial<ChatMarkers> = {}) {
    this.markers = { ...DEFAULT_MARKERS, ...markers };
    const encode = (text: string) => tokenizer.encode(text, { allowedSpecial: "all" });
    this.#ids = {
      system: encode(this.markers.system),
      user: encode(this.markers.user),
      assistant: encode(this.markers.assistant),
      end: encode(this.markers.end),
    };
    if (this.#ids.end.length === 0) throw new Error("the chat template's end marker is empty");
  }

  /** Token ids of a role's marker. */
  markerIds(role: Role | "end"): readonly number[] {
    return this.#ids[role];
  }

  /** Renders whole turns; the loss weight is 1 on assistant contents and their end markers. */
  render(turns: readonly Turn[]): Rendered {
    const ids: number[] = [], weights: number[] = [];
    const push = (part: readonly number[], w: number) => {
      for (const id of part) {
        ids.push(id);
        weights.push(w);
      }
    };
    for (const turn of turns) {
      const learn = turn.role === "assistant" ? 1 : 0;
      push(this.#ids[turn.role], 0);
      push(this.tokenizer.encode(turn.content), learn);
      push(this.#ids.end, learn);
    }
    return { ids, weights };
  }

  /** The tokens a model continues to answer `turns`: the turns, then the assistant marker. */
  prompt(turns: readonly Turn[]): number[] {
    return [...this.render(turns).ids, ...this.#ids.assistant];
  }

  /** A prompt and a response as one sequence, ending with the end marker (what the reward model scores). */
  promptAndResponse(turns: readonly Turn[], response: string): { ids: number[]; promptLength: number } {
    const prompt = this.prompt(turns);
    return {
      ids: [...prompt, ...this.tokenizer.encode(response), ...this.#ids.end],
      promptLength: prompt.length,
    };
  }

  /**
   * Ids that end a generated answer: the end marker when it is one token, and `<|endoftext|>` when the
   * tokenizer has it. (A multi-token end marker is cut off the decoded text by {@linkcode answerText}.)
   */
  stopIds(): number[] {
    const stops: number[] = [];
    if (this.#ids.end.length === 1) stops.push(this.#ids.end[0]);
    const eot = this.tokenizer.specialTokens[END_OF_TEXT];
    if (eot !== undefined && !stops.includes(eot)) stops.push(eot);
    return stops;
  }

  /** The answer text of generated ids: decoded, cut at the end marker (or `<|endoftext|>`). */
  answerText(generated: readonly number[]): string {
    const stops = new Set(this.stopIds());
    const cut = generated.findIndex((id) => stops.has(id));
    let text = this.tokenizer.decode(cut === -1 ? [...generated] : generated.slice(0, cut));
    const end = text.indexOf(this.markers.end);
    if (end >= 0) text = text.slice(0, end);
    return text;
  }

  /** The markers as JSON (what {@linkcode CHAT_TEMPLATE_FILE} holds). */
  toJSON(): { format: "kiln-chat-template"; version: 1; markers: ChatMarkers } {
    return { format: "kiln-chat-template", version: 1, markers: { ...this.markers } };
  }
}

/**
 * The template a model directory was trained with (`chat_template.json`), or kiln's default when the
 * directory has none (e.g. a pretrained model).
 */
export async function loadChatTemplate(dir: string, tokenizer: Tokenizer): Promise<ChatTemplate> {
  const path = `${dir}/${CHAT_TEMPLATE_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return new ChatTemplate(tokenizer);
    throw e;
  }
  let json: { format?: string; markers?: Partial<ChatMarkers> };
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DataError(path, undefined, `not valid JSON (${(e as Error).message})`);
  }
  if (json.format !== "kiln-chat-template" || typeof json.markers !== "object") {
    throw new DataError(path, "format", 'expected {"format": "kiln-chat-template", "markers": {…}}');
  }
  return new ChatTemplate(tokenizer, json.markers);
}
