"""Every variable config/settings.py reads is in docs/configuration.md's table and in
.env.example, as the settings module says."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_read_from_the_environment_is_documented():
    settings = (ROOT / "config" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z_0-9]+)"', settings))
    assert len(read) > 50
    table = (ROOT / "docs" / "configuration.md").read_text()
    rows = " ".join(re.findall(r"^\| ([^|]+) \|", table, re.M))
    documented = set(re.findall(r"[A-Z][A-Z_0-9]+", rows))
    example = (ROOT / ".env.example").read_text()
    assert sorted(read - documented) == []
    assert sorted(name for name in read if name not in example) == []
