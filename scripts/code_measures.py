"""Code measures for issue #10's closing note: module and function sizes, import cycles, and how
many modules each shared rule is written in.

    python scripts/code_measures.py            # this checkout
    python scripts/code_measures.py /tmp/main  # another tree, e.g. `git archive 344bdbf | tar -x -C /tmp/main`
    python scripts/code_measures.py --json

Scope: the shipped packages (planner/, runners/, search/, reports/, trainplan/); tests, benchmarks
and scripts are not counted. Sizes are physical lines (a function: ``def`` line to its last line,
methods and nested functions counted on their own). An import cycle is a strongly connected set
of first-party modules in the graph of imports that run (module level and inside functions;
``if TYPE_CHECKING`` blocks left out); an edge to a package means its ``__init__``. Rule places
are counted by the patterns in ``RULES`` over each module's code without comments and docstrings
(a pattern finds where a rule is spelled out, not where a constant is used), so they are a guide:
read the listed modules before quoting a number.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import statistics
import sys
from pathlib import Path

PACKAGES = {"planner": "trainplan.planner", "runners": "trainplan.runners", "search": "trainplan.search",
            "reports": "trainplan.reports", "trainplan": "trainplan"}

Q = "['\"]"  # either quote: patterns also match the unparsed code, where strings take single quotes
RULES: dict[str, str] = {
    # the set of ZeRO stages written out (a definition or a literal copy of it)
    "zero stages": r"ZERO_STAGES\s*=|\(0, 1, 2, 3\)|\[0, 1, 2, 3\]|range\(4\)|IntRange\(0, 3\)",
    # global batch -> gradient accumulation arithmetic
    "global batch to accumulation": r"def with_global_batch|global_batch\s*//|global_batch\s*/\s*\(",
    # layout rules (what makes a layout invalid)
    "layout rules": r"def problems\b",
    # bucket sizes written as numbers
    "bucket sizes": r"\b500000000\b|\b50000000\b|\b500_000_000\b|\b50_000_000\b|\b5e8\b|\b5e7\b",
    # the deepspeed launch command built
    "launch command": Q + r"--num_gpus" + Q,
    # the trial status set spelled out
    "trial statuses": r"\(\s*" + Q + "completed" + Q + r",\s*" + Q + "(pruned|oom)" + Q,
    # trial attribute keys written or read by literal name on a trial (not on the study)
    "trial attribute keys": r"(?<!study)\.set_user_attr\(" + Q + r"|set_trial_user_attr\(\w+, " + Q
                            + r"|(?<!study)\.user_attrs\.get\(" + Q + r"|(?<!study)\.user_attrs\[" + Q,
    # command line > file > defaults: where flags are merged over a spec or sweep file
    "precedence (command line > file > defaults)": r"def resolve_spec|def load_sweep",
    # the recommendation's JSON assembled
    "recommendation JSON": Q + "kind" + Q + r":\s*" + Q + "recommendation" + Q,
}
"""Rule -> a pattern over a module's code (comments and docstrings left out)."""


def code_text(tree: ast.Module) -> str:
    """The module's code without comments and docstrings (``ast.unparse``)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.unparse(tree)


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for folder, dotted in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([dotted, *parts])] = path
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(tree: ast.Module, name: str, is_pkg: bool, known: set[str]) -> list[tuple[str, bool]]:
    """(target module, inside a function) for every first-party import that runs."""
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                for sub in child.orelse:
                    visit(sub, in_func)
                continue
            inner = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_func) for a in child.names if a.name in known)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - child.level + 1]
                    base = ".".join([*pkg, *([base] if base else [])])
                for a in child.names:
                    if f"{base}.{a.name}" in known:
                        out.append((f"{base}.{a.name}", in_func))
                    elif base in known:
                        out.append((base, in_func))
            visit(child, inner)

    visit(tree, False)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def measure(root: Path) -> dict:
    mods = modules(root)
    known = set(mods)
    sizes, funcs = {}, []
    runtime: dict[str, set[str]] = {m: set() for m in mods}
    top: dict[str, set[str]] = {m: set() for m in mods}
    rules: dict[str, list[str]] = {r: [] for r in RULES}
    for name, path in mods.items():
        text = path.read_text()
        sizes[name] = len(text.splitlines())
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
        for target, in_func in imports(tree, name, path.name == "__init__.py", known):
            if target != name:
                runtime[name].add(target)
                if not in_func:
                    top[name].add(target)
        code = code_text(ast.parse(text))
        for rule, pattern in RULES.items():
            if re.search(pattern, code):
                rules[rule].append(name)
    funcs.sort()
    largest_mod = max(sizes, key=sizes.get)
    return {
        "modules": len(mods),
        "module_lines_median": statistics.median(sizes.values()),
        "module_lines_largest": [largest_mod, sizes[largest_mod]],
        "functions": len(funcs),
        "function_lines_median": statistics.median(n for n, _ in funcs),
        "function_lines_largest": [funcs[-1][1], funcs[-1][0]],
        "functions_over_60_lines": [f"{f} ({n})" for n, f in funcs if n > 60],
        "import_cycles": cycles(runtime),
        "import_cycles_top_level_only": cycles(top),
        "rule_places": {rule: sorted(names) for rule, names in rules.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    m = measure(Path(args.root))
    if args.json:
        print(json.dumps(m, indent=2))
        return
    print(f"modules: {m['modules']}; lines median {m['module_lines_median']}, largest "
          f"{m['module_lines_largest'][0]} ({m['module_lines_largest'][1]})")
    print(f"functions: {m['functions']}; lines median {m['function_lines_median']}, largest "
          f"{m['function_lines_largest'][0]} ({m['function_lines_largest'][1]})")
    print(f"functions over 60 lines: {len(m['functions_over_60_lines'])}: {', '.join(m['functions_over_60_lines'])}")
    print(f"import cycles (runtime, incl. function-level): {len(m['import_cycles'])}")
    for comp in m["import_cycles"]:
        print("  " + " <-> ".join(c.removeprefix("trainplan.") for c in comp))
    print(f"import cycles (module-level imports only): {len(m['import_cycles_top_level_only'])}")
    for rule, names in m["rule_places"].items():
        print(f"{rule}: {len(names)} ({', '.join(n.removeprefix('trainplan.') for n in names)})")


if __name__ == "__main__":
    main()
