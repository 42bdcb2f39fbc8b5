"""The apps' dependency direction (docs/architecture.md), from every import statement."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("config", "accounts", "billing", "chat")
ALLOWED = {
    "config": set(),
    "accounts": {"config"},
    "billing": {"config"},
    "chat": {"config", "accounts", "billing"},
}


def imported_apps(app: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / app).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in APPS and top != app:
                    found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_each_app_imports_only_what_the_architecture_allows():
    wrong = {
        app: {other: where for other, where in imported_apps(app).items() if other not in allowed}
        for app, allowed in ALLOWED.items()
    }
    assert not any(wrong.values()), wrong
