/**
 * The `kiln` command: the CLI of a pipeline file (see `pipeline/command.ts`) for YAML pipelines, plus
 * `kiln stages` (the built-in stages, `--docs` their settings) and tools that work on a model directory:
 * `kiln sample` and `kiln score`. It sits on top of everything: the runtime below it imports no stage.
 *
 * ```sh
 * deno install -g -n kiln --no-config --allow-read --allow-write --allow-run --allow-env --allow-net cli/kiln.ts
 * kiln run pipeline.yaml --until dedupe
 * ```
 * @module
 */
import { main } from "../pipeline/command.ts";
import { configTable } from "../pipeline/config_doc.ts";
import { loadPipelineYaml } from "../pipeline/yaml.ts";
import { builtinStage, listBuiltinStages } from "../stages/registry.ts";

/** Every built-in stage's settings as Markdown (`docs/stages.md` is this, generated). */
export async function stagesReference(): Promise<string> {
  const parts = [
    "# Stage settings",
    "",
    "Generated from each stage's schema by `deno task kiln stages --docs > docs/stages.md`; a test keeps it",
    "current. A field that a stage does not know is an error that suggests the nearest valid name.",
  ];
  for (const [name] of await listBuiltinStages()) {
    const factory = (await builtinStage(name))!;
    parts.push("", `## ${name}`, "", factory.description, "", configTable(factory.schema));
  }
  return parts.join("\n");
}

/** Runs the `kiln` command with `args`; returns the exit code. */
export function kiln(args: string[]): Promise<number> {
  return main(args, {
    kiln: {
      loadYaml: (file) => loadPipelineYaml(file, builtinStage),
      stages: async (docs) =>
        docs
          ? await stagesReference()
          : (await listBuiltinStages()).map(([name, description]) => `${name.padEnd(16)} ${description}`)
            .join("\n"),
      tools: {
        sample: async () => (await import("../model/sample_cli.ts")).sampleCommand,
        score: async () => (await import("../stages/reward_model/score_cli.ts")).scoreCommand,
      },
    },
  });
}

if (import.meta.main) Deno.exit(await kiln(Deno.args));
