// Reads Kubernetes manifests (YAML, one or more documents a file) and checks them
// offline against the API's schemas, as shipped by the `kubernetes-models` package: its
// validators (types, required fields, enums) and, for what those let through, its
// TypeScript interfaces, whose excess-property checks find unknown fields (which
// `kubectl apply` refuses too).

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import ts from "typescript";
import { parseAllDocuments } from "yaml";
import { repoRoot } from "./oxy.ts";

/** One object of a manifest file. */
export interface Manifest {
  file: string;
  object: Record<string, any>;
}

/** Every object in the `.yaml` files of `dir`, in file order. */
export function readManifests(dir: string): Manifest[] {
  const manifests: Manifest[] = [];
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".yaml")).sort()) {
    const file = join(dir, name);
    for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
      const object = doc.toJS();
      if (object !== null) manifests.push({ file, object });
    }
  }
  return manifests;
}

/** The `kubernetes-models` module of an object's kind: `kubernetes-models/apps/v1/Deployment`. */
function modelModule(object: Record<string, any>): string {
  const { apiVersion, kind } = object;
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^\w+$/.test(kind)) {
    throw new Error(`not a Kubernetes object (apiVersion ${apiVersion}, kind ${kind})`);
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

/** What the schema of the object's kind says is wrong with it; null when nothing is. */
export async function schemaProblem(object: Record<string, any>): Promise<string | null> {
  let model: new (data: unknown) => { validate(): void };
  try {
    model = (await import(modelModule(object)))[object.kind];
  } catch (e) {
    return `no schema for ${object.apiVersion} ${object.kind}: ${(e as Error).message}`;
  }
  try {
    new model(object).validate();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Type errors of the objects as literals of their kinds' interfaces: unknown fields
 * above all (the validators allow them), one message per object at most. */
export function unknownFieldProblems(objects: Record<string, any>[]): string[] {
  // One source file an object, in memory only, inside this package so that
  // `kubernetes-models` resolves from its node_modules.
  const sources = new Map(
    objects.map((object, i) => [
      join(repoRoot, "integration-tests", "test", `__manifest_${i}__.ts`),
      {
        object,
        text: `import type { I${object.kind} as Kind } from "${modelModule(object)}";\n` +
          `export const manifest: Kind = ${JSON.stringify(object, null, 2)};\n`,
      },
    ]),
  );
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (file, language, ...rest) => {
    const text = sources.get(file)?.text;
    return text !== undefined ? ts.createSourceFile(file, text, language) : getSourceFile.call(host, file, language, ...rest);
  };
  host.fileExists = (file) => sources.has(file) || fileExists.call(host, file);
  host.readFile = (file) => sources.get(file)?.text ?? readFile.call(host, file);
  const program = ts.createProgram([...sources.keys()], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const object = d.file && sources.get(d.file.fileName)?.object;
    const what = object ? `${object.kind} ${object.metadata?.name ?? ""}: ` : "";
    return what + ts.flattenDiagnosticMessageText(d.messageText, "\n");
  });
}
