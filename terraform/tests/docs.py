"""Inputs and outputs tables of the module READMEs (and of examples/local's), generated from
variables.tf and outputs.tf (in the spirit of terraform-docs), between the
markers <!-- BEGIN_TF_DOCS --> and <!-- END_TF_DOCS -->.

    python terraform/tests/docs.py          # rewrite the READMEs
    python terraform/tests/docs.py --check  # exit 1 when one is stale (the tests do this)
"""

import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TF_ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from tf import load_hcl_dir  # noqa: E402

BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"


def unquote(s):
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        try:
            return json.loads(s)
        except ValueError:
            return s[1:-1]
    return s


def expr(v):
    """An HCL value as python-hcl2 returns it, back in HCL-ish text."""
    if isinstance(v, str):
        if v.startswith("${") and v.endswith("}"):
            return v[2:-1]
        return v  # quoted strings stay quoted, keywords and types bare
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(expr(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [(k, x) for k, x in v.items() if not k.startswith("__")]
        return "{" + ", ".join(f"{unquote(k)} = {expr(x)}" for k, x in items) + "}"
    return str(v)


def cell(text):
    text = re.sub(r"\s+", " ", text).strip()
    return text.replace("|", "\\|")


def code(text):
    text = cell(text)
    return f"`{text}`" if "`" not in text else f"``{text}``"


def tables(module_dir):
    variables, outputs = [], []
    for doc in load_hcl_dir(module_dir).values():
        for v in doc.get("variable", []):
            for name, body in v.items():
                variables.append((unquote(name), body))
        for o in doc.get("output", []):
            for name, body in o.items():
                outputs.append((unquote(name), body))
    lines = ["## Inputs", "", "| Name | Description | Type | Default | Required |", "|---|---|---|---|:---:|"]
    for name, body in sorted(variables, key=lambda x: ("default" in x[1], x[0])):
        has_default = "default" in body
        default = code(expr(body["default"])) if has_default else "n/a"
        sensitive = " (sensitive)" if body.get("sensitive") is True else ""
        lines.append(f"| `{name}` | {cell(unquote(body.get('description', '')))}{sensitive} | {code(expr(body.get('type', 'any')))} | {default} | {'no' if has_default else 'yes'} |")
    lines += ["", "## Outputs", "", "| Name | Description |", "|---|---|"]
    for name, body in sorted(outputs):
        sensitive = " (sensitive)" if body.get("sensitive") is True else ""
        lines.append(f"| `{name}` | {cell(unquote(body.get('description', '')))}{sensitive} |")
    return "\n".join(lines) + "\n"


def update(readme, module_dir):
    text = open(readme).read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: add the markers {BEGIN} and {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{tables(module_dir)}{END}{tail}"


def readmes():
    """READMEs with generated tables: every module's, and examples/local's."""
    return sorted(glob.glob(f"{TF_ROOT}/modules/*/README.md")) + [f"{TF_ROOT}/examples/local/README.md"]


def main():
    check = "--check" in sys.argv
    stale = []
    for readme in readmes():
        module_dir = os.path.dirname(readme)
        new = update(readme, module_dir)
        if new != open(readme).read():
            stale.append(os.path.relpath(readme, TF_ROOT))
            if not check:
                with open(readme, "w") as f:
                    f.write(new)
    if check and stale:
        print("stale README tables (run: python terraform/tests/docs.py): " + ", ".join(stale))
        return 1
    if not check:
        print(f"updated: {', '.join(stale) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
