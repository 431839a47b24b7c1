"""The sequence templates ``si init seq`` writes: Python, JavaScript and TypeScript, each as a
generator (output only), a transformer (input to output) or a consumer (input only).

Every template is ready to pack as written (the TypeScript one after ``npm run build``, whose
output ``dist/`` is what package.json's ``main`` points at). STH downloads its templates with
npm; these are written from here, with no network.
"""

from __future__ import annotations

import json

LANGUAGES = ("py", "js", "ts")
KINDS = ("generator", "transformer", "consumer")

_PY = {
    "generator": '''"""A generator sequence: produces output, reads no input.

Try it:  si seq deploy . && si inst output -
"""


async def run(context, input, start=0, count=10):
    context.logger.info("generating")
    for number in range(int(start), int(start) + int(count)):
        yield f"{number}\\n"
''',
    "transformer": '''"""A transformer sequence: turns each input line into an output line.

Try it:  si seq deploy . && echo hello | si inst input - --end && si inst output -
"""


async def run(context, input, *args):
    context.logger.info("transforming")
    async for line in input:
        yield f"{line.strip().upper()}\\n"
''',
    "consumer": '''"""A consumer sequence: reads input, writes no output (here: logs each line).

Try it:  si seq deploy . && echo hello | si inst input - --end && si inst log -
"""


async def run(context, input, *args):
    async for line in input:
        context.logger.info(f"received {line.strip()!r}")
''',
}

_JS = {
    "generator": """// A generator sequence: produces output, reads no input.
// Try it:  si seq deploy . && si inst output -
module.exports = async function* (input, start = 0, count = 10) {
    this.logger.info("generating");
    for (let number = Number(start); number < Number(start) + Number(count); number++) {
        yield `${number}\\n`;
    }
};
""",
    "transformer": """// A transformer sequence: turns each input chunk into an output chunk.
// Try it:  si seq deploy . && echo hello | si inst input - --end && si inst output -
module.exports = async function* (input) {
    this.logger.info("transforming");
    for await (const chunk of input) {
        yield String(chunk).toUpperCase();
    }
};
""",
    "consumer": """// A consumer sequence: reads input, writes no output (here: logs each chunk).
// Try it:  si seq deploy . && echo hello | si inst input - --end && si inst log -
module.exports = async function (input) {
    for await (const chunk of input) {
        this.logger.info(`received ${String(chunk).trim()}`);
    }
};
""",
}

_TS = {
    "generator": """// A generator sequence: produces output, reads no input.
// Build, then try it:  npm install && npm run build && si seq deploy . && si inst output -
import { Readable } from "stream";

export = async function* (this: any, _input: Readable, start = 0, count = 10) {
    this.logger.info("generating");
    for (let number = Number(start); number < Number(start) + Number(count); number++) {
        yield `${number}\\n`;
    }
};
""",
    "transformer": """// A transformer sequence: turns each input chunk into an output chunk.
// Build, then try it:  npm install && npm run build && si seq deploy .
import { Readable } from "stream";

export = async function* (this: any, input: Readable) {
    this.logger.info("transforming");
    for await (const chunk of input) {
        yield String(chunk).toUpperCase();
    }
};
""",
    "consumer": """// A consumer sequence: reads input, writes no output (here: logs each chunk).
// Build, then try it:  npm install && npm run build && si seq deploy .
import { Readable } from "stream";

export = async function (this: any, input: Readable) {
    for await (const chunk of input) {
        this.logger.info(`received ${String(chunk).trim()}`);
    }
};
""",
}

_TSCONFIG = {
    "compilerOptions": {
        "target": "ES2020",
        "module": "commonjs",
        "outDir": "dist",
        "rootDir": "src",
        "strict": True,
        "esModuleInterop": True,
        "skipLibCheck": True,
    },
    "include": ["src"],
}


def _json(value: object) -> str:
    return json.dumps(value, indent=2) + "\n"


def template_files(language: str, kind: str, name: str) -> dict[str, str]:
    """The files of a new sequence called ``name``: relative path -> content."""
    if language not in LANGUAGES or kind not in KINDS:
        raise ValueError(f"no template for {language} {kind}")
    manifest: dict[str, object] = {
        "name": name,
        "version": "0.1.0",
        "description": f"A {kind} sequence",
    }
    if language == "py":
        manifest.update(main="main.py", engines={"python3": "3.9.0"})
        return {
            "main.py": _PY[kind],
            "package.json": _json(manifest),
            "requirements.txt": "# Dependencies, installed into __pypackages__ before packing:\n"
            "#   pip install -t __pypackages__ -r requirements.txt\n",
        }
    if language == "js":
        manifest.update(main="index.js", engines={"node": ">=16"})
        return {"index.js": _JS[kind], "package.json": _json(manifest)}
    manifest.update(
        main="dist/index.js",
        engines={"node": ">=16"},
        scripts={"build": "tsc"},
        devDependencies={"typescript": "^5.0.0", "@types/node": "^20.0.0"},
    )
    return {
        "src/index.ts": _TS[kind],
        "package.json": _json(manifest),
        "tsconfig.json": _json(_TSCONFIG),
        ".siignore": "src\nnode_modules\ntsconfig.json\n",
    }
